"""Private server sets (Redis Sentinel, RabbitMQ cluster) that tests and benchmarks start on free
ports, never the shared servers."""
