"""The benchmark's scenarios, one module each: org, toggle, sync_all (section sync-all)."""
