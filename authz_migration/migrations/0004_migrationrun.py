"""The record of every move."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("authz_migration", "0003_orgflagoverride"),
    ]

    operations = [
        migrations.CreateModel(
            name="MigrationRun",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "migration_type",
                    models.CharField(
                        choices=[
                            ("forward", "Forward (legacy to Casbin)"),
                            ("rollback", "Rollback (Casbin to legacy)"),
                        ],
                        max_length=16,
                    ),
                ),
                (
                    "scope_type",
                    models.CharField(
                        choices=[
                            ("course", "Course"),
                            ("org", "Organization"),
                            ("instance", "Instance"),
                        ],
                        max_length=16,
                    ),
                ),
                (
                    "scope_key",
                    models.CharField(
                        blank=True,
                        help_text="Course key, org, or blank for the instance.",
                        max_length=255,
                    ),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("running", "Running"),
                            ("completed", "Completed"),
                            ("partial_success", "Partial success"),
                            ("failed", "Failed"),
                            ("skipped", "Skipped"),
                        ],
                        default="running",
                        max_length=16,
                    ),
                ),
                (
                    "trigger",
                    models.CharField(
                        choices=[
                            ("signal", "Override saved"),
                            ("command", "Management command"),
                            ("api", "Python API"),
                        ],
                        max_length=16,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("completed_at", models.DateTimeField(blank=True, null=True)),
                (
                    "metadata",
                    models.JSONField(
                        blank=True,
                        default=dict,
                        help_text="Counts, rows that could not move grouped by reason, excluded courses, duration; on failure the error and traceback. Usernames only, no other personal data.",
                    ),
                ),
                (
                    "triggered_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
                "indexes": [
                    models.Index(
                        fields=["scope_type", "scope_key", "created_at"], name="authz_mig_run_scope"
                    ),
                    models.Index(fields=["status", "created_at"], name="authz_mig_run_status"),
                ],
            },
        ),
    ]
