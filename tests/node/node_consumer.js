// The RabbitMQ side of the Node services, with amqplib as they use it, for the cut-over tests
// (tests/test_cutover.py). It declares and consumes queues the way they do:
//
//   node node_consumer.js --url AMQP_URL --out FILE [--prefetch N] [--exchange X] [--arguments JSON] QUEUE[=PATTERN] ...
//
//   QUEUE=PATTERN  the messenger worker: its own durable queue (with --arguments, if given),
//                  bound to the topic exchange X with PATTERN (several PATTERNs: comma-separated)
//   QUEUE          the LMS worker: assertQueue(QUEUE, {durable: true}), no arguments, no binding
//
// A message is handled by acking it, then appending {queue, routingKey, body} as one JSON line
// to FILE: what is in FILE was acked. Signals:
//   SIGUSR2  stop acking, as a worker stuck in its SMTP calls: deliveries are held, and
//            "window full" is printed once the prefetch window of every queue is
//   SIGTERM  close the channel and the connection (held deliveries go back to their queues),
//            print {"acked": n, "abandoned": m} and exit 0
"use strict";

const fs = require("node:fs");
const amqp = require("amqplib");

function parseArgs(argv) {
  const options = { prefetch: 10, exchange: "sup_exchange", arguments: {}, queues: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--url") options.url = argv[++i];
    else if (arg === "--out") options.out = argv[++i];
    else if (arg === "--prefetch") options.prefetch = Number(argv[++i]);
    else if (arg === "--exchange") options.exchange = argv[++i];
    else if (arg === "--arguments") options.arguments = JSON.parse(argv[++i]);
    else {
      const [name, patterns] = arg.split("=");
      options.queues.push({ name, patterns: patterns ? patterns.split(",") : [] });
    }
  }
  if (!options.url || !options.out || options.queues.length === 0) {
    throw new Error("usage: node_consumer.js --url URL --out FILE [--prefetch N] QUEUE[=PATTERN] ...");
  }
  return options;
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const connection = await amqp.connect(options.url);
  const channel = await connection.createChannel();
  await channel.prefetch(options.prefetch); // per consumer, as amqplib's default
  let acked = 0;
  let frozen = false;
  const held = new Map(); // queue -> deliveries held since the freeze

  for (const queue of options.queues) {
    if (queue.patterns.length) {
      await channel.assertExchange(options.exchange, "topic", { durable: true });
      await channel.assertQueue(queue.name, { durable: true, arguments: options.arguments });
      for (const pattern of queue.patterns) await channel.bindQueue(queue.name, options.exchange, pattern);
    } else {
      await channel.assertQueue(queue.name, { durable: true });
    }
    held.set(queue.name, 0);
    await channel.consume(
      queue.name,
      (message) => {
        if (message === null) return; // cancelled by the broker
        if (frozen) {
          held.set(queue.name, held.get(queue.name) + 1);
          if ([...held.values()].every((n) => n >= options.prefetch)) console.log("window full");
          return;
        }
        channel.ack(message);
        acked++;
        const record = { queue: queue.name, routingKey: message.fields.routingKey, body: message.content.toString() };
        fs.appendFileSync(options.out, JSON.stringify(record) + "\n");
      },
      { noAck: false },
    );
  }
  console.log(`consuming ${options.queues.map((q) => q.name).join(", ")}`);

  process.on("SIGUSR2", () => {
    frozen = true;
    console.log("frozen");
  });
  process.on("SIGTERM", async () => {
    const abandoned = [...held.values()].reduce((a, b) => a + b, 0);
    await channel.close();
    await connection.close();
    console.log(JSON.stringify({ acked, abandoned }));
    process.exit(0);
  });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
