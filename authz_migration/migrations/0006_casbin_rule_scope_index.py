"""Index casbin_rule by scope (v2), so that a move reads the rows of one course or org without
scanning the whole policy table (docs/decisions/0004).

casbin_rule belongs to casbin_adapter, so the index is added through the schema editor rather
than a model state operation; reversing the migration drops exactly this index.
"""

from django.db import migrations, models

INDEX_NAME = "authz_mig_casbin_scope"


def _index(schema_editor):
    # On PostgreSQL a pattern-ops index also serves LIKE 'prefix%' (an org's scopes) under any
    # collation; other databases use a plain b-tree for both = and prefix LIKE.
    pattern_ops = schema_editor.connection.vendor == "postgresql"
    return models.Index(
        fields=["v2"],
        name=INDEX_NAME,
        opclasses=["varchar_pattern_ops"] if pattern_ops else [],
    )


def add_index(apps, schema_editor):
    schema_editor.add_index(apps.get_model("casbin_adapter", "CasbinRule"), _index(schema_editor))


def remove_index(apps, schema_editor):
    schema_editor.remove_index(
        apps.get_model("casbin_adapter", "CasbinRule"), _index(schema_editor)
    )


class Migration(migrations.Migration):
    dependencies = [
        ("authz_migration", "0005_scopelock"),
        ("casbin_adapter", "0001_initial"),
    ]

    # DDL: on MariaDB it cannot run inside a transaction, and there is no data to protect.
    operations = [migrations.RunPython(add_index, remove_index, atomic=False)]
