# health_check_results moves here from the cleanup app: state only (the table stays as cleanup's
# migrations made it), and its content type follows. cleanup.0003 deletes it from cleanup's state
# after this.

import django.db.models.functions.datetime
from django.db import migrations, models

from supworker.moved_models import MoveContentTypes


class Migration(migrations.Migration):

    dependencies = [
        ("monitoring", "0001_initial"),
        ("cleanup", "0002_keyset_indexes"),  # the table exists, in its last shape
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="HealthCheckResult",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("checked_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now(), db_index=True)),
                        ("healthy", models.BooleanField()),
                        ("checks", models.JSONField(help_text="name: {ok, latency_ms, error}")),
                    ],
                    options={
                        "db_table": "health_check_results",
                    },
                ),
            ],
            database_operations=[],
        ),
        MoveContentTypes("cleanup", "monitoring", ["healthcheckresult"]),
    ]
