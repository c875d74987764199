"""What the admin shows of the instance cutover (docs/decisions/0013): the org override rows
the cutover wrote are marked as its pins and releases, never as an operator's; the page of
such a row says whose it is and what releases it; the org override list and the run list say
how far the cutover has got, in a fixed number of queries however many orgs it holds."""

from __future__ import annotations

import re

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from authz_migration import api, cutover
from authz_migration.admin.cutover import NAMED_HELD_ORGS
from authz_migration.conf import org_override_model
from authz_migration.models import ScopeLock

pytestmark = pytest.mark.django_db

OPERATOR_ORG = "OrgOp"


def url(model: str, view: str, *args) -> str:
    return reverse(f"admin:authz_migration_{model}_{view}", args=args)


def notices(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def org_name(number: int) -> str:
    return f"Org{number:02d}"


@pytest.fixture
def superuser(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def held(make_user, grant, global_flag, org_override):
    """held(n): n orgs with one legacy role each and an org forced off by an operator; the
    global flag off, then a cutover to authz stopped after releasing the first org: the
    others held by its pins (called again with a larger n, the new orgs are pinned too)."""

    def make(count: int) -> list[str]:
        orgs = [org_name(i) for i in range(count)]
        # The guard's lock rows, in the test's transaction (on a server they would otherwise
        # be created on a side connection and outlive the test).
        keys = ["instance", *(f"org:{org}" for org in [*orgs, OPERATOR_ORG])]
        ScopeLock.objects.bulk_create([ScopeLock(key=k) for k in keys], ignore_conflicts=True)
        global_flag(False)
        user = make_user()
        for org in orgs:
            grant(user, f"course-v1:{org}+C+R", "staff")
        org_override(OPERATOR_ORG, "off", note="kept on legacy by the operator")
        steps = list(api.cutover(True, orgs=orgs[:1]))
        assert [s.kind for s in steps] == ["plan", "pinned", "released"]
        return orgs

    return make


def set_by_column(response) -> dict[str, str]:
    """org -> the text of its "set by" cell, from the changelist's HTML."""
    html = response.content.decode()
    found = {}
    for row in re.findall(r"<tr>(.*?)</tr>", html, re.S):
        cell = re.search(r'<td class="field-set_by">(.*?)</td>', row, re.S)
        key = re.search(r'<t[hd] class="field-key">(?:<a [^>]*>)?([^<]+)', row, re.S)
        if cell and key:
            found[key.group(1).strip()] = re.sub(r"<[^>]+>", " ", cell.group(1)).split()
    return {org: " ".join(words) for org, words in found.items()}


def test_the_org_override_list_tells_cutover_pins_from_operators_rows(client, superuser, held):
    held(3)
    client.force_login(superuser)
    current = set_by_column(client.get(url("orgflagoverride", "changelist")))
    assert current == {
        "Org00": "cutover release written by the cutover",
        "Org01": "cutover pin `authz_migrate cutover` releases it",
        "Org02": "cutover pin `authz_migrate cutover` releases it",
        OPERATOR_ORG: "operator",
    }
    # The history shows Org00's pin too: every row the cutover wrote is marked.
    response = client.get(url("orgflagoverride", "changelist"), {"show_history": "1"})
    history = [
        " ".join(re.sub(r"<[^>]+>", " ", cell).split())
        for cell in re.findall(r'<td class="field-set_by">(.*?)</td>', response.content.decode())
    ]
    assert sorted(history).count("cutover pin `authz_migrate cutover` releases it") == 3
    assert history.count("operator") == 1


def row_page(client, org: str, newest: bool = True):
    rows = org_override_model().objects.filter(org=org).order_by("-change_date", "-id")
    row = rows.first() if newest else rows.last()
    return client.get(url("orgflagoverride", "change", row.pk))


def test_the_page_of_a_pin_says_it_is_the_cutovers_and_what_releases_it(client, superuser, held):
    held(2)
    client.force_login(superuser)
    [(level, text)] = [n for n in notices(row_page(client, "Org01")) if "cutover" in n[1]]
    assert level == "warning"
    assert text.startswith("This row is a cutover pin, not an operator's override")
    assert "`authz_migrate cutover --to authz` releases it" in text
    assert "Saving a row of your own for Org01 replaces the pin" in text
    # Org00 was released: its pin is history, its newest row the cutover's release.
    [(_, pin)] = notices(row_page(client, "Org00", newest=False))
    assert pin.startswith("This row was a cutover pin") and "a newer row of Org00" in pin
    [(_, release)] = notices(row_page(client, "Org00"))
    assert "it released the org's cutover pin" in release
    # An operator's row gets no such notice.
    assert not [n for n in notices(row_page(client, OPERATOR_ORG)) if "cutover" in n[1]]


def test_both_lists_show_the_cutovers_progress(client, superuser, held):
    orgs = held(3)
    client.force_login(superuser)
    expected = (
        "warning",
        "Cutover in progress: 1 org released (1 role row(s) moved), 2 held on their previous "
        "state by cutover pins (Org01, Org02). `authz_migrate cutover --to authz` releases "
        "them.",
    )
    for model in ("orgflagoverride", "migrationrun"):
        assert expected in notices(client.get(url(model, "changelist"))), model
    # The course override list is not where pins are.
    assert not notices(client.get(url("courseflagoverride", "changelist")))

    list(api.cutover(True))
    assert cutover.progress()["pinned"] == []
    done = (
        "info",
        "Cutover: 3 orgs released (3 role row(s) moved); no org is held by a cutover pin.",
    )
    for model in ("orgflagoverride", "migrationrun"):
        assert notices(client.get(url(model, "changelist"))) == [done], model
    assert orgs == ["Org00", "Org01", "Org02"]


def test_no_notice_without_a_cutover(client, superuser, org_override):
    org_override("OrgX", "on")
    client.force_login(superuser)
    for model in ("orgflagoverride", "migrationrun"):
        assert notices(client.get(url(model, "changelist"))) == []


def test_the_notice_is_not_carried_over_by_a_posts_redirect(client, superuser, held):
    held(2)
    client.force_login(superuser)
    row = org_override_model().objects.filter(org=OPERATOR_ORG).get()
    response = client.post(
        url("orgflagoverride", "changelist"),
        {"action": "verify_scopes", "_selected_action": [row.pk]},
        follow=True,
    )
    assert response.redirect_chain and response.status_code == 200
    shown = [text for _, text in notices(response)]
    assert len([text for text in shown if text.startswith("Cutover in progress")]) == 1
    assert any("OrgOp" in text for text in shown)  # the action's own message


def test_a_pinned_org_saved_by_an_operator_is_theirs_again(client, superuser, held, org_override):
    held(3)
    org_override("Org01", "on", note="forced by the operator")
    client.force_login(superuser)
    column = set_by_column(client.get(url("orgflagoverride", "changelist")))
    assert column["Org01"] == "operator"
    assert "Org01" not in cutover.progress()["pinned"]


def test_the_lists_take_a_fixed_number_of_queries_however_many_pins(client, superuser, held):
    def queries(model: str) -> tuple[int, list]:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url(model, "changelist"))
        assert response.status_code == 200
        return len(captured), notices(response)

    held(3)
    client.force_login(superuser)
    few = {model: queries(model) for model in ("orgflagoverride", "migrationrun")}
    held(30)  # Org03 to Org29 pinned beside Org01 and Org02; Org00 released again
    many = {model: queries(model) for model in ("orgflagoverride", "migrationrun")}
    for model in few:
        assert many[model][0] == few[model][0], model
        [(_, text)] = many[model][1]
        assert "29 held" in text
        more = 29 - NAMED_HELD_ORGS
        assert f"(Org01, Org02, Org03, Org04, Org05 and {more} more)" in text
