"""A read-only admin view of Casbin's rows, which casbin_adapter does not register, so that
the demo's reader can watch roles arrive in and leave ``casbin_rule``."""

from casbin_adapter.models import CasbinRule
from django.contrib import admin


class CasbinRuleAdmin(admin.ModelAdmin):
    list_display = ["id", "ptype", "v0", "v1", "v2"]
    list_filter = ["ptype"]
    search_fields = ["v0", "v1", "v2"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# The app may one day register it itself; don't fight over it.
if not admin.site.is_registered(CasbinRule):
    admin.site.register(CasbinRule, CasbinRuleAdmin)
