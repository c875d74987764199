"""A tiny host project that installs authz_migration, as an Open edX site would."""
