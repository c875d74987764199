"""Rows the scope guard locks (docs/decisions/0003)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("authz_migration", "0004_migrationrun"),
    ]

    operations = [
        migrations.CreateModel(
            name="ScopeLock",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("key", models.CharField(max_length=300, unique=True)),
            ],
            options={
                "ordering": ["key"],
            },
        ),
    ]
