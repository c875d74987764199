import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    """``created_at`` is when the run started, set by the orchestrator (it was the time of
    insertion, after completion). Only the field's Python default changes: the column stays
    as it is, so the migration runs no SQL (on SQLite an AlterField would rebuild the table)."""

    dependencies = [
        ("authz_migration", "0007_migrationrun_trigger_admin"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="migrationrun",
                    name="created_at",
                    field=models.DateTimeField(
                        default=django.utils.timezone.now, help_text="When the run started."
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]
