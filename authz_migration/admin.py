"""Admin registrations (basic; the fuller admin experience builds on these)."""
