"""Two trigger values for runs: "admin" (the admin's "Sync now" action) and "global_flag"
(the ``skipped`` run written when the global flag changed). Only the field's choices change:
no column or data is touched, on any database."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("authz_migration", "0006_casbin_rule_scope_index"),
    ]

    operations = [
        migrations.AlterField(
            model_name="migrationrun",
            name="trigger",
            field=models.CharField(
                choices=[
                    ("signal", "Override saved"),
                    ("command", "Management command"),
                    ("api", "Python API"),
                    ("admin", "Admin action"),
                    ("global_flag", "Global flag changed"),
                ],
                max_length=16,
            ),
        ),
    ]
