"""The legacy role table (swappable: a host may use its own)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="CourseAccessRole",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "org",
                    models.CharField(
                        blank=True,
                        db_index=True,
                        help_text="Blank: not org-specific.",
                        max_length=64,
                    ),
                ),
                (
                    "course_id",
                    models.CharField(
                        blank=True,
                        db_index=True,
                        help_text="Course key such as course-v1:ORG+COURSE+RUN; blank: an org-wide role.",
                        max_length=255,
                    ),
                ),
                ("role", models.CharField(db_index=True, max_length=64)),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, to=settings.AUTH_USER_MODEL
                    ),
                ),
            ],
            options={
                "ordering": ["id"],
                "swappable": "AUTHZ_MIGRATION_LEGACY_ROLE_MODEL",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("user", "org", "course_id", "role"),
                        name="authz_migration_courseaccessrole_unique",
                    )
                ],
            },
        ),
    ]
