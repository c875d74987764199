"""pycasbin's role links for "g" rules with a domain, updated a whole move at a time.

pycasbin's ``DomainManager`` keeps, per domain (a scope here), a list of ``Link(user, role)``,
and a role manager per domain that a check has asked about since the enforcer loaded. Its
``build_incremental_role_links`` goes through four calls a rule to append one link; following
a move, that was about two thirds of the enforcer's update (benchmarks/README.rst). This
module makes the same changes to the same structures with one call a move
(docs/decisions/0009):

- links are appended to, and removed from, their domain's list exactly as pycasbin does;
- a domain's own role manager, where a check has built one, learns each link through
  pycasbin's own ``add_link``/``delete_link``, as pycasbin would tell it (rebuilding it
  instead would cost the next check of a large domain a quadratic rebuild).

It does so only for pycasbin's own ``DomainManager`` with no domain matching function (a link
in one domain then reaches the managers of every matching domain) and rules of exactly
user, role, domain. Anything else, and a removal of a link the manager does not hold (pycasbin
raises there), goes through pycasbin's public path.
"""

from __future__ import annotations

from operator import itemgetter

try:  # pycasbin 2.x; an older layout takes pycasbin's public path
    from casbin.rbac.default_role_manager.role_manager import DomainManager, Link
except ImportError:  # pragma: no cover - depends on the installed pycasbin
    DomainManager = Link = None

# "g = _, _, _": a user, a role and the domain (scope) the role holds in. Fields past these
# (a rule read from six columns) are left out, as pycasbin leaves them out.
FIELDS = 3
_FIELDS = itemgetter(*range(FIELDS))


def handles(role_manager, assertion) -> bool:
    """Whether :func:`add` and :func:`remove` may stand in for pycasbin's
    ``build_incremental_role_links`` on this role manager."""
    return (
        DomainManager is not None
        and type(role_manager) is DomainManager
        and role_manager.domain_matching_func is None
        and isinstance(role_manager.all_links, dict)
        and isinstance(role_manager.rm_map, dict)
        and assertion.value.count("_") == FIELDS
    )


def add(role_manager, rules) -> None:
    """Link each rule's user to its role in its domain."""
    links_of = role_manager.all_links
    built = role_manager.rm_map
    # Link is a namedtuple: made by tuple's own constructor, as its _make does, rather than
    # through its Python-level __new__ (a third of this loop's time).
    make = tuple.__new__
    for user, role, domain in map(_FIELDS, rules):
        links = links_of.get(domain)
        if links is None:
            links = links_of[domain] = []
        links.append(make(Link, (user, role)))
        if domain in built:
            built[domain].add_link(user, role, domain)


def remove(role_manager, rules) -> None:
    """Unlink each rule's user from its role in its domain: one copy of the link each, the
    first, as pycasbin removes it. A rule given twice (the policy held it twice) loses two."""
    links_of = role_manager.all_links
    built = role_manager.rm_map
    for user, role, domain in map(_FIELDS, rules):
        links = links_of.get(domain)
        try:
            links.remove((user, role))  # equal to the Link(user, role) it finds
        except (AttributeError, ValueError):  # no such list, or no such link in it
            role_manager.delete_link(user, role, domain)  # pycasbin's answer: it raises
            continue
        if domain in built:
            try:
                built[domain].delete_link(user, role, domain)
            except KeyError:
                # pycasbin's per-domain manager holds a role once however often it was
                # linked, and fails to unlink it a second time. Dropped, it is rebuilt from
                # the domain's links at the next check of that domain.
                del built[domain]
