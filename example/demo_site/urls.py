"""Only the admin: that is where overrides are edited and migration runs are inspected."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
