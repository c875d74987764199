"""Course override history (swappable)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("authz_migration", "0001_courseaccessrole"),
    ]

    operations = [
        migrations.CreateModel(
            name="CourseFlagOverride",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("waffle_flag", models.CharField(db_index=True, max_length=255)),
                (
                    "override_choice",
                    models.CharField(
                        choices=[("on", "Force on"), ("off", "Force off")],
                        default="on",
                        max_length=3,
                    ),
                ),
                (
                    "enabled",
                    models.BooleanField(
                        default=False,
                        help_text="Unchecked: this override is not in force (falls through).",
                    ),
                ),
                (
                    "change_date",
                    models.DateTimeField(auto_now_add=True, verbose_name="change date"),
                ),
                ("note", models.TextField(blank=True, help_text="Why this override was changed.")),
                ("course_id", models.CharField(db_index=True, max_length=255)),
                (
                    "changed_by",
                    models.ForeignKey(
                        blank=True,
                        editable=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-change_date", "-id"],
                "abstract": False,
                "swappable": "AUTHZ_MIGRATION_COURSE_OVERRIDE_MODEL",
                "indexes": [
                    models.Index(
                        fields=["waffle_flag", "course_id", "change_date"],
                        name="authz_mig_course_ovr_current",
                    )
                ],
            },
        ),
    ]
