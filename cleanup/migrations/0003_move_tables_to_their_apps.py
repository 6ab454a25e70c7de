# The messenger's websocket_connections, user_statistics and global_statistics now belong to the
# supworker app (supworker.0007), health_check_results to monitoring (monitoring.0002). This only
# forgets them in cleanup's state, after those migrations took them over: no table is dropped.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("cleanup", "0002_keyset_indexes"),
        ("supworker", "0007_messenger_tables_from_cleanup"),
        ("monitoring", "0002_health_check_results_from_cleanup"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="GlobalStatistics"),
                migrations.DeleteModel(name="HealthCheckResult"),
                migrations.DeleteModel(name="UserStatistics"),
                migrations.DeleteModel(name="WebsocketConnection"),
            ],
            database_operations=[],
        ),
    ]
