"""`orch`: the operator's command line, a client of the HTTP API (CONTRACT.md, HTTP API).

    orch teams                                   the teams, their status, tasks and members
    orch team create NAME                        prints the new team's id (only)
    orch team start|pause|resume TEAM_ID
    orch token create TEAM_ID                    a team token, printed once
    orch token list TEAM_ID | revoke TEAM_ID TOKEN_ID
    orch member add TEAM_ID --role worker --specialization "Technical Executor" --max 2
    orch member list TEAM_ID                     role, status, load, history of each member
    orch member set TEAM_ID MEMBER_ID [--status idle|offline] [--capacity N] [--skill NAME=LEVEL]
    orch tasks TEAM_ID [--status pending]
    orch task add TEAM_ID TITLE [--priority N]   prints the new task's id (only)
    orch task cancel|retry TEAM_ID TASK_ID       prints the task's new status
    orch depend|undepend TEAM_ID TASK_ID ON_TASK_ID
    orch tree TEAM_ID TASK_ID                    a task's hierarchy with status and assignees
    orch decompose TEAM_ID "goal"                the manager's planner makes a task tree
    orch decompose TEAM_ID "goal" --background [--key KEY]
                                                 queues it instead; prints its id (only)
    orch decompositions TEAM_ID [--status S]     goals queued with --background, newest first
    orch decomposition TEAM_ID DECOMPOSITION_ID [--wait [--timeout S]] [--cancel|--retry]
                                                 one's status; --wait: until it ends (exit 1
                                                 unless it succeeded); --cancel, --retry
    orch events TEAM_ID [--follow] [--timeout S] the team's live events, one line each
    orch demo                                    `make demo`

`--url` (or ORCH_URL) names the API, default http://127.0.0.1:5000; `--token` (or ORCH_TOKEN,
else ORCH_ADMIN_TOKEN) is the bearer token. `--json` prints the API's JSON instead of tables.
These global options go before or after the subcommand.

Exit codes: 0 success; 1 the API refused the request (its message is printed); 2 a usage error;
3 the API could not be reached. The token is never printed, except by `orch token create`.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import urlsplit

import click
import requests
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

DEFAULT_URL = "http://127.0.0.1:5000"
TASK_STATUSES = (
    "pending",
    "blocked",
    "assigned",
    "in_progress",
    "review",
    "completed",
    "failed",
    "cancelled",
)
STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "cancelled": "grey50",
    "in_progress": "yellow",
    "review": "magenta",
    "assigned": "cyan",
    "pending": "white",
    "blocked": "grey62",
    "active": "green",
    "paused": "yellow",
    "inactive": "grey62",
    "idle": "white",
    "offline": "grey50",
    "queued": "white",
    "planning": "yellow",
    "succeeded": "green",
}
SPECIALIZATIONS = ("Technical Executor", "Content Creator", "Researcher/Analyzer")
DECOMPOSITION_STATUSES = ("queued", "planning", "succeeded", "failed", "cancelled")
DECOMPOSITION_FINAL = ("succeeded", "failed", "cancelled")

EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 3


class ApiError(click.ClickException):
    """The API answered with an error; its message is what the user sees."""

    exit_code = EXIT_API_ERROR


class Unreachable(click.ClickException):
    exit_code = EXIT_UNREACHABLE


@dataclass
class Client:
    url: str
    token: str | None
    as_json: bool
    timeout: float = 30.0

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self.http = requests.Session()
        self.http.headers["Accept"] = "application/json"
        self.set_token(self.token)

    @property
    def shown_url(self) -> str:
        """The address as messages show it: a password in it stays out of terminals and logs."""
        parts = urlsplit(self.url)
        if "@" not in parts.netloc:
            return self.url
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()

    def set_token(self, token: str | None) -> None:
        self.token = token
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        else:
            self.http.headers.pop("Authorization", None)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        target = f"{self.url}/api/v1{path}"
        try:
            response = self.http.request(method, target, **kwargs)
        except requests.ConnectionError:
            raise Unreachable(
                f"cannot reach the API at {self.shown_url} (is it running? set --url or ORCH_URL)"
            ) from None
        except requests.Timeout:
            raise Unreachable(f"the API at {self.shown_url} did not answer in time") from None
        except requests.RequestException as exc:
            raise Unreachable(f"request to {self.shown_url} failed: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise ApiError(error_message(response))
        return response

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"the API answered {response.status_code} with something other than JSON"
            ) from None


def error_message(response: requests.Response) -> str:
    """The contract's error body as one line (or a few), e.g. `404 Not Found: no such team`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "message" not in body:
        return f"{response.status_code} {response.reason or ''}".strip()
    status = body.get("status") or response.reason or ""
    text = f"{body.get('code', response.status_code)} {status}: {body['message']}"
    errors = body.get("errors")
    if isinstance(errors, dict):
        for field, problems in errors.items():
            if isinstance(problems, list):
                joiner = " -> " if field == "cycle" else "; "  # the cycle's task ids, in order
                problems = joiner.join(str(p) for p in problems)
            if field == "cycle" and str(problems) in str(body["message"]):
                continue  # the message names it already
            text += f"\n  {field}: {problems}"
    if response.status_code == 401:
        text += "\n  (pass --token, or set ORCH_TOKEN or ORCH_ADMIN_TOKEN)"
    return text


def out() -> Console:
    # Built per use (click's test runner swaps sys.stdout); one-line messages are never wrapped.
    return Console(highlight=False, soft_wrap=True)


def err() -> Console:
    return Console(stderr=True, highlight=False)


def styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{escape(status)}[/]"


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def done(client: Client, message: str) -> None:
    """The confirmation of a request the API answers with no body (204): on stdout, or on
    stderr with --json (stdout then stays empty, as the API's answer was)."""
    (err() if client.as_json else out()).print(message)


def moment_text(value: str) -> str:
    """An API timestamp, `2024-05-01 12:00:00Z` (to the second, in UTC)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return escape(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + ("Z" if moment.tzinfo else "")


def fail(message: str, *, unreachable: bool = False) -> NoReturn:
    raise (Unreachable if unreachable else ApiError)(message)


pass_client = click.make_pass_decorator(Client)


# --- the group ---------------------------------------------------------------------------------


def check_url(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """An http(s) URL with a host (`127.0.0.1:5901` alone would be read as a path), the API's
    base: a URL given with the API's own /api/v1 on it means the same server."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(
            f"{value!r} needs a scheme and a host, e.g. http://{value.split('://')[-1] or 'HOST'}"
        )
    base = value.rstrip("/")
    return base.removesuffix("/api/v1") if base.endswith("/api/v1") else base


def _override(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    """A callback that sets a global option given after the subcommand on the Client the group
    built (the group's callback runs before the subcommand's options are parsed)."""

    def apply(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None or value is False:  # not given here: the group's value stands
            return
        client = ctx.find_object(Client)
        if client is None:
            return
        if name == "token":
            client.set_token(value)
        elif name == "url":
            client.url = check_url(ctx, param, value) or value
        else:
            setattr(client, name, value)

    return apply


def global_options_after() -> list[click.Option]:
    return [
        click.Option(["--url"], expose_value=False, callback=_override("url"), help="API URL."),
        click.Option(["--token"], expose_value=False, callback=_override("token"), help="Token."),
        click.Option(
            ["--json", "as_json"],
            is_flag=True,
            default=None,
            expose_value=False,
            callback=_override("as_json"),
            help="Print the API's JSON instead of tables.",
        ),
        click.Option(
            ["--http-timeout", "http_timeout"],  # not `timeout`: `events --timeout` is another
            type=float,
            expose_value=False,
            callback=_override("timeout"),
            help="Seconds to wait for each answer.",
        ),
    ]


def accept_global_options_after_subcommands(group: click.Group) -> None:
    """`orch tasks T --json` as well as `orch --json tasks T`: every command under the group
    takes the global options too (without defaults or environment: those are the group's)."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            accept_global_options_after_subcommands(command)
        else:
            command.params.extend(global_options_after())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--url",
    envvar="ORCH_URL",
    default=DEFAULT_URL,
    show_default=True,
    show_envvar=True,
    callback=check_url,
    help="Base URL of the API.",
)
@click.option(
    "--token",
    envvar=["ORCH_TOKEN", "ORCH_ADMIN_TOKEN"],
    default=None,
    show_default=False,
    show_envvar=True,
    help="Bearer token (default: $ORCH_TOKEN, else $ORCH_ADMIN_TOKEN). Never printed.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of tables.")
@click.option(
    "--http-timeout", default=30.0, show_default=True, help="Seconds to wait for each answer."
)
@click.version_option(package_name="agent-orchestration", prog_name="orch")
@click.pass_context
def cli(
    ctx: click.Context, url: str, token: str | None, as_json: bool, http_timeout: float
) -> None:
    """Operate agent teams through the orchestration HTTP API.

    Exit codes: 0 success, 1 the API refused the request, 2 usage error,
    3 the API could not be reached."""
    ctx.obj = Client(url, token, as_json, http_timeout)


# --- teams -------------------------------------------------------------------------------------


def counts_text(counts: dict[str, int]) -> str:
    """`12 total` then one `status n` line per status present."""
    lines = [f"{sum(counts.values())} total"]
    lines += [f"{styled(s)} {counts[s]}" for s in TASK_STATUSES if counts.get(s)]
    return "\n".join(lines)


def members_text(members: list[dict[str, Any]]) -> str:
    """One line per member: `boss (manager)`, `coder 1/3` (its load)."""
    if not members:
        return "[dim]none[/]"
    lines = []
    for m in sorted(members, key=lambda m: (m["role"] != "manager", m["agent_id"])):
        if m["role"] == "manager":
            lines.append(f"{escape(m['agent_id'])} (manager)")
        else:
            lines.append(
                f"{escape(m['agent_id'])} {m['current_workload']}/{m['max_concurrent_tasks']}"
            )
    return "\n".join(lines)


@cli.command("teams")
@pass_client
def teams_cmd(client: Client) -> None:
    """The teams this token reaches: status, task counts by status, members and their load."""
    teams = client.call("GET", "/teams")
    members = {t["id"]: client.call("GET", f"/teams/{t['id']}/members") for t in teams}
    if client.as_json:
        print_json([{**t, "members": members[t["id"]]} for t in teams])
        return
    if not teams:
        out().print("No teams yet: `orch team create NAME`.")
        return
    table = Table(title="Teams", title_justify="left", show_lines=True)
    table.add_column("team (name, id)", min_width=36)
    table.add_column("status", no_wrap=True)
    table.add_column("tasks", no_wrap=True)
    table.add_column("members")
    for t in teams:
        table.add_row(
            f"[bold]{escape(t['name'])}[/]\n[dim]{t['id']}[/]",
            styled(t["status"]),
            counts_text(t.get("task_counts") or {}),
            members_text(members[t["id"]]),
        )
    out().print(table, soft_wrap=False)


@cli.group("team")
def team_group() -> None:
    """Create a team; start, pause, resume or delete one."""


def print_team(client: Client, team: dict[str, Any], verb: str) -> None:
    if client.as_json:
        print_json(team)
        return
    out().print(
        f"{verb} team [bold]{escape(team['name'])}[/] {team['id']}: {styled(team['status'])}"
    )


@team_group.command("create")
@click.argument("name")
@click.option("--description", "-d", default=None, help="What the team is for.")
@pass_client
def team_create(client: Client, name: str, description: str | None) -> None:
    """Create a team (admin token); it starts inactive. Prints its id (for scripts:
    `TEAM=$(orch team create NAME)`), the rest on stderr."""
    body: dict[str, Any] = {"name": name}
    if description is not None:
        body["description"] = description
    team = client.call("POST", "/teams", json=body)
    if client.as_json:
        print_json(team)
        return
    click.echo(team["id"])
    err().print(f"Created team [bold]{escape(team['name'])}[/]: {styled(team['status'])}")


def _transition(action: str, verb: str) -> click.Command:
    @click.argument("team_id")
    @pass_client
    def command(client: Client, team_id: str) -> None:
        print_team(client, client.call("POST", f"/teams/{team_id}/{action}"), verb)

    command.__doc__ = {
        "start": "inactive -> active: assignments begin.",
        "pause": "active -> paused: no new assignments; work in flight finishes.",
        "resume": "paused -> active.",
    }[action]
    return team_group.command(action)(command)


_transition("start", "Started")
_transition("pause", "Paused")
_transition("resume", "Resumed")


@team_group.command("delete")
@click.argument("team_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_client
def team_delete(client: Client, team_id: str, yes: bool) -> None:
    """Delete TEAM_ID with its members, tasks and history (admin token). The team must not be
    active nor have tasks assigned or running: pause it and let them finish first."""
    if not yes:
        click.confirm(f"Delete team {team_id} and everything it holds?", abort=True)
    client.call("DELETE", f"/teams/{team_id}")
    err().print(f"Deleted team {team_id}")


# --- tokens and members ------------------------------------------------------------------------


@cli.group("token")
def token_group() -> None:
    """Team tokens: create, list, revoke."""


@token_group.command("create")
@click.argument("team_id")
@pass_client
def token_create(client: Client, team_id: str) -> None:
    """Create a token reaching TEAM_ID only (admin token). Printed once, stored hashed: keep it."""
    body = client.call("POST", f"/teams/{team_id}/tokens")
    if client.as_json:
        print_json(body)
    else:
        click.echo(body["token"])
    err().print("[dim]Shown once; the API keeps only its hash. Use it as ORCH_TOKEN.[/]")


def listed(client: Client, path: str, empty: str) -> list[Any] | None:
    """The rows GET path answers, for a table; None when they are printed already: as the
    API's JSON with --json, or as `empty` when there are none."""
    page = listed_page(client, path, empty)
    return None if page is None else page[0]


def listed_page(
    client: Client, path: str, empty: str, params: dict[str, Any] | None = None
) -> tuple[list[Any], str | None] | None:
    """As listed, for a paged list: its rows and the next page's cursor (X-Next-Cursor;
    None on the last page), which --json prints on stderr. `params`: the query (None values
    left out)."""
    query = {k: v for k, v in (params or {}).items() if v is not None}
    response = client.request("GET", path, params=query)
    rows: list[Any] = response.json()
    cursor = response.headers.get("X-Next-Cursor")
    if client.as_json:
        print_json(rows)
        if cursor:
            err().print(f"more: --after {cursor}", soft_wrap=True)
        return None
    if not rows:
        out().print(empty)
        return None
    return rows, cursor


@token_group.command("list")
@click.argument("team_id")
@pass_client
def token_list(client: Client, team_id: str) -> None:
    """The tokens of TEAM_ID (admin token): id, prefix, when created and last used (to the
    minute). The tokens themselves are never shown again."""
    tokens = listed(
        client, f"/teams/{team_id}/tokens", "No tokens for this team: `orch token create TEAM_ID`."
    )
    if tokens is None:
        return
    table = Table(title=f"Tokens ({len(tokens)})", title_justify="left", show_lines=True)
    table.add_column("token (prefix, id)", min_width=36, no_wrap=True)
    table.add_column("created")
    table.add_column("last used")
    for t in tokens:
        last_used = t.get("last_used_at")
        table.add_row(
            f"[bold]{escape(t['prefix'])}[/]…\n[dim]{t['id']}[/]",
            moment_text(t["created_at"]),
            moment_text(last_used) if last_used else "[dim]never[/]",
        )
    out().print(table, soft_wrap=False)


@token_group.command("revoke")
@click.argument("team_id")
@click.argument("token_id")
@pass_client
def token_revoke(client: Client, team_id: str, token_id: str) -> None:
    """Revoke a token of TEAM_ID (admin token): requests bearing it answer 401 from now on."""
    client.call("DELETE", f"/teams/{team_id}/tokens/{token_id}")
    done(client, f"Revoked token {token_id}")


@cli.group("member")
def member_group() -> None:
    """Team members: add, list, set."""


def parse_skill(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, float] | None:
    """`--skill coding=0.9 ...` as {"coding": 0.9}; the level is required (no default)."""
    if not values:
        return None
    skills: dict[str, float] = {}
    for value in values:
        name, sep, level_text = value.partition("=")
        try:
            level = float(level_text) if sep else None
        except ValueError:
            level = None
        if not name.strip() or level is None or not 0 <= level <= 1:
            raise click.BadParameter(
                f"{value!r}: use NAME=LEVEL with LEVEL a proficiency in 0..1, e.g. coding=0.9"
            )
        skills[name.strip()] = level
    return skills


def skill_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--skill",
        "skills",
        multiple=True,
        callback=parse_skill,
        metavar="NAME=LEVEL",
        help="A skill and its proficiency 0..1; repeatable.",
    )


@member_group.command("add")
@click.argument("team_id")
@click.option(
    "--role",
    type=click.Choice(["worker", "manager"]),
    default="worker",
    show_default=True,
)
@click.option(
    "--specialization",
    "-s",
    default=None,
    help=f"A preset ({', '.join(SPECIALIZATIONS)}) or any text.",
)
@click.option("--max", "max_tasks", type=int, default=None, help="Max concurrent tasks (3).")
@click.option("--agent-id", default=None, help="The agent's name (generated when omitted).")
@skill_option()
@pass_client
def member_add(
    client: Client,
    team_id: str,
    role: str,
    specialization: str | None,
    max_tasks: int | None,
    agent_id: str | None,
    skills: dict[str, float] | None,
) -> None:
    """Add a manager or worker to TEAM_ID."""
    body: dict[str, Any] = {"role": role}
    if specialization is not None:
        body["specialization"] = specialization
    if max_tasks is not None:
        body["max_concurrent_tasks"] = max_tasks
    if agent_id is not None:
        body["agent_id"] = agent_id
    if skills:
        body["skills"] = skills
    member = client.call("POST", f"/teams/{team_id}/members", json=body)
    if client.as_json:
        print_json(member)
        return
    out().print(
        f"Added {member['role']} [bold]{escape(member['agent_id'])}[/] {member['id']} "
        f"({escape(member.get('specialization') or 'Generalist')}, "
        f"max {member['max_concurrent_tasks']} tasks)"
    )


@member_group.command("list")
@click.argument("team_id")
@pass_client
def member_list(client: Client, team_id: str) -> None:
    """The members of TEAM_ID: agent, role, specialization and member id (for `orch member
    set`), status, load/capacity, tasks completed/failed."""
    members = listed(
        client, f"/teams/{team_id}/members", "No members yet: `orch member add TEAM_ID`."
    )
    if members is None:
        return
    table = Table(title=f"Members ({len(members)})", title_justify="left", show_lines=True)
    table.add_column("agent (role, specialization, id)", min_width=36)
    table.add_column("status", no_wrap=True)
    table.add_column("load", justify="right", no_wrap=True)
    table.add_column("done/failed", justify="right")
    for m in sorted(members, key=lambda m: (m["role"] != "manager", m["agent_id"])):
        table.add_row(
            f"[bold]{escape(m['agent_id'])}[/] ({m['role']}, "
            f"{escape(m.get('specialization') or 'Generalist')})\n[dim]{m['id']}[/]",
            styled(m["status"]),
            f"{m['current_workload']}/{m['max_concurrent_tasks']}",
            f"{m['tasks_completed']}/{m['tasks_failed']}",
        )
    out().print(table, soft_wrap=False)


@member_group.command("set")
@click.argument("team_id")
@click.argument("member_id")
@click.option(
    "--status",
    type=click.Choice(["idle", "offline"]),
    default=None,
    help="offline: no new work (what it has started finishes); idle: back online.",
)
@click.option("--capacity", type=int, default=None, help="Max concurrent tasks.")
@skill_option()
@pass_client
def member_set(
    client: Client,
    team_id: str,
    member_id: str,
    status: str | None,
    capacity: int | None,
    skills: dict[str, float] | None,
) -> None:
    """Change a member's status, capacity or skills (--skill replaces all its skills)."""
    body: dict[str, Any] = {}
    if status is not None:
        body["status"] = status
    if capacity is not None:
        body["max_concurrent_tasks"] = capacity
    if skills:
        body["skills"] = skills
    if not body:
        raise click.UsageError("give at least one of --status, --capacity, --skill")
    member = client.call("PATCH", f"/teams/{team_id}/members/{member_id}", json=body)
    if client.as_json:
        print_json(member)
        return
    text = (
        f"Updated {member['role']} [bold]{escape(member['agent_id'])}[/] {member['id']}: "
        f"{styled(member['status'])}, max {member['max_concurrent_tasks']} tasks"
    )
    if member.get("skills"):
        text += ", skills " + ", ".join(
            f"{escape(name)}={level:g}" for name, level in member["skills"].items()
        )
    out().print(text)


# --- tasks -------------------------------------------------------------------------------------


def member_names(client: Client, team_id: str) -> dict[str, str]:
    return {m["id"]: m["agent_id"] for m in client.call("GET", f"/teams/{team_id}/members")}


@cli.command("tasks")
@click.argument("team_id")
@click.option("--status", type=click.Choice(TASK_STATUSES), default=None, help="Only these.")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=None, help="At most this many (a page)."
)
@click.option("--after", default=None, help="The page after this cursor (printed under a page).")
@pass_client
def tasks_cmd(
    client: Client, team_id: str, status: str | None, limit: int | None, after: str | None
) -> None:
    """The tasks of TEAM_ID, highest priority first."""
    page = listed_page(
        client,
        f"/teams/{team_id}/tasks",
        "No tasks" + (f" with status {status}." if status else "."),
        {"status": status, "limit": limit, "after": after},
    )
    if page is None:
        return
    tasks, cursor = page
    names = member_names(client, team_id)
    table = Table(title=f"Tasks ({len(tasks)})", title_justify="left", show_lines=True)
    table.add_column("task (title, id)", min_width=36)
    table.add_column("status", no_wrap=True)
    table.add_column("prio", justify="right")
    table.add_column("assignee")
    table.add_column("parent", no_wrap=True)
    for t in tasks:
        table.add_row(
            f"[bold]{escape(t['title'])}[/]\n[dim]{t['id']}[/]",
            styled(t["status"]),
            str(t["priority"]),
            escape(names.get(t.get("assigned_to") or "", "")) or "-",
            f"[dim]{(t.get('parent_task_id') or '-')[:8]}[/]",
        )
    out().print(table, soft_wrap=False)
    more_follow(cursor)


def more_follow(cursor: str | None) -> None:
    """Under a table of a page: how to ask for the next one."""
    if cursor:
        out().print(f"More follow: add --after {cursor}", soft_wrap=True, highlight=False)


def task_label(task: dict[str, Any], names: dict[str, str]) -> str:
    who = names.get(task.get("assigned_to") or "")
    skills = ", ".join(task.get("required_skills") or [])
    label = f"{styled(task['status'])} [bold]{escape(task['title'])}[/] [dim]{task['id']}[/]"
    if skills:
        label += f" [dim]({escape(skills)})[/]"
    if who:
        label += f" [cyan]<- {escape(who)}[/]"
    if task.get("error_message"):
        label += f" [red]{escape(task['error_message'])}[/]"
    return label


@cli.group("task")
def task_group() -> None:
    """Add a task; cancel or retry one."""


@task_group.command("add")
@click.argument("team_id")
@click.argument("title")
@click.option("--priority", "-p", type=int, default=None, help="0..10, highest first (5).")
@click.option(
    "--skill", "skills", multiple=True, metavar="NAME", help="A required skill; repeatable."
)
@click.option(
    "--depends-on",
    "depends_on",
    multiple=True,
    metavar="TASK_ID",
    help="A task this one waits for; repeatable.",
)
@click.option("--parent", default=None, metavar="TASK_ID", help="The task this one is part of.")
@click.option("--description", "-d", default=None, help="What to do.")
@pass_client
def task_add(
    client: Client,
    team_id: str,
    title: str,
    priority: int | None,
    skills: tuple[str, ...],
    depends_on: tuple[str, ...],
    parent: str | None,
    description: str | None,
) -> None:
    """Add a task to TEAM_ID. Prints its id (for scripts: `TASK=$(orch task add T TITLE)`),
    the rest on stderr."""
    body: dict[str, Any] = {"title": title}
    if description is not None:
        body["description"] = description
    if priority is not None:
        body["priority"] = priority
    if skills:
        body["required_skills"] = list(skills)
    if depends_on:
        body["depends_on"] = list(depends_on)
    if parent is not None:
        body["parent_task_id"] = parent
    task = client.call("POST", f"/teams/{team_id}/tasks", json=body)
    if client.as_json:
        print_json(task)
        return
    click.echo(task["id"])
    err().print(
        f"Created task [bold]{escape(task['title'])}[/]: {styled(task['status'])}, "
        f"priority {task['priority']}"
    )


ID_PREFIX_MIN = 4


def task_id_of(client: Client, team_id: str, given: str) -> str:
    """A task id, or enough of its start (the tasks table's parent column shows 8 characters)
    to name one task of the team."""
    try:
        return str(uuid.UUID(given))
    except ValueError:
        pass
    start = given.lower()
    if len(start) < ID_PREFIX_MIN:
        raise click.BadParameter(f"{given!r}: give a task id or at least its first 4 characters")
    found = [
        t["id"] for t in client.call("GET", f"/teams/{team_id}/tasks") if t["id"].startswith(start)
    ]
    if len(found) != 1:
        raise click.BadParameter(
            f"{given!r} starts {'no task id' if not found else f'{len(found)} task ids'} "
            "of the team: give more of it"
        )
    return str(found[0])


def _task_action(action: str, verb: str, doc: str) -> None:
    @click.argument("team_id")
    @click.argument("task_id")
    @pass_client
    def command(client: Client, team_id: str, task_id: str) -> None:
        task_id = task_id_of(client, team_id, task_id)
        task = client.call("POST", f"/teams/{team_id}/tasks/{task_id}/{action}")
        if client.as_json:
            print_json(task)
            return
        out().print(
            f"{verb} task [bold]{escape(task['title'])}[/] {task['id']}: {styled(task['status'])}"
        )

    command.__doc__ = doc
    task_group.command(action)(command)


_task_action(
    "cancel",
    "Cancelled",
    "Cancel TASK_ID and its subtasks; what waits for them ends too. Prints its new status.",
)
_task_action(
    "retry",
    "Retried",
    "Give a failed or cancelled TASK_ID another go. Prints its new status.",
)


@cli.command("depend")
@click.argument("team_id")
@click.argument("task_id")
@click.argument("on_task_id")
@pass_client
def depend_cmd(client: Client, team_id: str, task_id: str, on_task_id: str) -> None:
    """Make TASK_ID wait for ON_TASK_ID. A cycle is refused (exit 1), the cycle printed."""
    task_id, on_task_id = (task_id_of(client, team_id, t) for t in (task_id, on_task_id))
    response = client.request(
        "POST",
        f"/teams/{team_id}/tasks/{task_id}/dependencies",
        json={"depends_on_task_id": on_task_id},
    )
    if client.as_json:
        print_json(response.json())
        return
    already = " already" if response.status_code == 200 else ""
    out().print(f"Task {task_id}{already} waits for {on_task_id}")


@cli.command("undepend")
@click.argument("team_id")
@click.argument("task_id")
@click.argument("on_task_id")
@pass_client
def undepend_cmd(client: Client, team_id: str, task_id: str, on_task_id: str) -> None:
    """TASK_ID no longer waits for ON_TASK_ID (it becomes ready if nothing else holds it)."""
    task_id, on_task_id = (task_id_of(client, team_id, t) for t in (task_id, on_task_id))
    client.call("DELETE", f"/teams/{team_id}/tasks/{task_id}/dependencies/{on_task_id}")
    done(client, f"Task {task_id} no longer waits for {on_task_id}")


@cli.command("tree")
@click.argument("team_id")
@click.argument("task_id")
@pass_client
def tree_cmd(client: Client, team_id: str, task_id: str) -> None:
    """TASK_ID and its subtasks, with status colours and assignees."""
    task_id = task_id_of(client, team_id, task_id)
    hierarchy = client.call("GET", f"/teams/{team_id}/tasks/{task_id}/hierarchy")
    if client.as_json:
        print_json(hierarchy)
        return
    names = member_names(client, team_id)

    def add(node: Tree, branch: dict[str, Any]) -> None:
        child = node.add(task_label(branch["task"], names))
        for sub in branch["subtasks"]:
            add(child, sub)

    tree = Tree(task_label(hierarchy["task"], names))
    for sub in hierarchy["subtasks"]:
        add(tree, sub)
    out().print(tree, soft_wrap=False)


@cli.command("decompose")
@click.argument("team_id")
@click.argument("goal")
@click.option("--max-depth", type=int, default=None, help="Deepest level created (3).")
@click.option(
    "--background",
    is_flag=True,
    help="Queue GOAL for a worker's planner and print the decomposition's id at once.",
)
@click.option(
    "--key",
    default=None,
    metavar="KEY",
    help="With --background: an Idempotency-Key; the same key (goal, depth) gives back the "
    "decomposition it first queued instead of another.",
)
@pass_client
def decompose_cmd(
    client: Client,
    team_id: str,
    goal: str,
    max_depth: int | None,
    background: bool,
    key: str | None,
) -> None:
    """Have the manager's planner turn GOAL into a task tree (the team needs a manager).

    With --background: queued instead of waited for; prints the decomposition's id (for
    scripts: `D=$(orch decompose T GOAL --background)`), the rest on stderr. Follow it with
    `orch decomposition TEAM_ID D --wait`."""
    if key is not None and not background:
        raise click.UsageError("--key goes with --background")
    body: dict[str, Any] = {"goal": goal}
    if max_depth is not None:
        body["max_depth"] = max_depth
    if background:
        queue_decomposition(client, team_id, body, key)
        return
    tasks = client.call("POST", f"/teams/{team_id}/decompose", json=body)
    if client.as_json:
        print_json(tasks)
        return
    out().print(f"The planner made {len(tasks)} tasks:")
    nodes: dict[str, Tree] = {}
    roots: list[Tree] = []
    for task in tasks:  # parents before children
        label = task_label(task, {})
        parent = nodes.get(task.get("parent_task_id") or "")
        node = parent.add(label) if parent is not None else Tree(label)
        if parent is None:
            roots.append(node)
        nodes[task["id"]] = node
    for root in roots:
        out().print(root, soft_wrap=False)


def queue_decomposition(
    client: Client, team_id: str, body: dict[str, Any], key: str | None
) -> None:
    response = client.request(
        "POST",
        f"/teams/{team_id}/decompositions",
        json=body,
        headers={"Idempotency-Key": key} if key is not None else {},
    )
    made = response.json()
    if client.as_json:
        print_json(made)
        return
    click.echo(made["id"])
    if response.headers.get("Idempotent-Replayed") == "true":
        err().print(f"Queued already with this key: {styled(made['status'])}")
    else:
        err().print(f"Queued for the planner: {styled(made['status'])}")


def shortened(text: str, width: int = 60) -> str:
    """Text on one line, cut to `width` characters (an ellipsis ending a cut one)."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def tasks_made(made: dict[str, Any]) -> str:
    return "-" if made.get("task_ids") is None else str(len(made["task_ids"]))


def attempts_text(attempts: int) -> str:
    return f"{attempts} attempt{'' if attempts == 1 else 's'}"


@cli.command("decompositions")
@click.argument("team_id")
@click.option(
    "--status", type=click.Choice(DECOMPOSITION_STATUSES), default=None, help="Only these."
)
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=None, help="At most this many (a page)."
)
@click.option("--after", default=None, help="The page after this cursor (printed under a page).")
@pass_client
def decompositions_cmd(
    client: Client, team_id: str, status: str | None, limit: int | None, after: str | None
) -> None:
    """The decompositions of TEAM_ID (goals queued with `orch decompose --background`), newest
    first: status, planning attempts, tasks made."""
    page = listed_page(
        client,
        f"/teams/{team_id}/decompositions",
        "No decompositions" + (f" with status {status}." if status else "."),
        {"status": status, "limit": limit, "after": after},
    )
    if page is None:
        return
    found, cursor = page
    table = Table(title=f"Decompositions ({len(found)})", title_justify="left", show_lines=True)
    table.add_column("decomposition (goal, id)", min_width=36)
    # Attempts under the status, the time on two lines: 80 columns show it all, full ids too.
    table.add_column("status", no_wrap=True)
    table.add_column("tasks", justify="right")
    table.add_column("created", max_width=10)
    for d in found:
        table.add_row(
            f"[bold]{escape(shortened(d['goal']))}[/]\n[dim]{d['id']}[/]",
            f"{styled(d['status'])}\n[dim]{attempts_text(d['attempts'])}[/]",
            tasks_made(d),
            moment_text(d["created_at"]),
        )
    out().print(table, soft_wrap=False)
    more_follow(cursor)


def print_decomposition(client: Client, made: dict[str, Any]) -> None:
    if client.as_json:
        print_json(made)
        return
    console = out()
    console.print(f"Decomposition {made['id']}: {styled(made['status'])}")
    console.print(f"  goal      {escape(' '.join(made['goal'].split()))}")
    console.print(f"  attempts  {made['attempts']}")
    tasks = tasks_made(made)
    if made.get("task_ids"):
        tasks += f" (the root: {made['task_ids'][0]}, see `orch tree`)"
    console.print(f"  tasks     {tasks}")
    console.print(f"  usage     {made['tokens_used']} tokens, cost {made['cost']:.6f}")
    console.print(f"  created   {moment_text(made['created_at'])}")
    if made.get("finished_at"):
        console.print(f"  finished  {moment_text(made['finished_at'])}")
    if made.get("error"):
        console.print(f"  error     [red]{escape(made['error'])}[/]")


def waited_for(client: Client, path: str, timeout: float) -> dict[str, Any]:
    """The decomposition at path once final: polled every 0.5 s, backing off to 2 s; refused
    (exit 1) when it is not final after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    pause = 0.5
    seen = None
    while True:
        made: dict[str, Any] = client.call("GET", path)
        if made["status"] in DECOMPOSITION_FINAL:
            return made
        if made["status"] != seen and not client.as_json:
            err().print(f"[dim]Decomposition {made['id']}: {made['status']}…[/]")
        seen = made["status"]
        left = deadline - time.monotonic()
        if left <= 0:
            fail(f"decomposition {made['id']} is still {made['status']} after {timeout:g} s")
        time.sleep(min(pause, left))
        pause = min(pause * 1.5, 2.0)


@cli.command("decomposition")
@click.argument("team_id")
@click.argument("decomposition_id")
@click.option("--wait", "-w", is_flag=True, help="Wait until it succeeds, fails or is cancelled.")
@click.option(
    "--timeout",
    "-t",
    type=click.FloatRange(min=0),
    default=None,
    help="With --wait: give up (exit 1) after this many seconds (300). Implies --wait.",
)
@click.option("--cancel", is_flag=True, help="Cancel it (while queued or planning).")
@click.option("--retry", is_flag=True, help="Queue it again (once failed or cancelled).")
@pass_client
def decomposition_cmd(
    client: Client,
    team_id: str,
    decomposition_id: str,
    wait: bool,
    timeout: float | None,
    cancel: bool,
    retry: bool,
) -> None:
    """A decomposition of TEAM_ID: its status, planning attempts, error, tasks made, usage.

    With --wait: polls until it is final; exit status 0 when it succeeded, 1 when it failed or
    was cancelled (its error printed). With --cancel or --retry: cancels it or queues it again
    and prints its new status (--retry --wait then follows the new attempt)."""
    path = f"/teams/{team_id}/decompositions/{decomposition_id}"
    waiting = wait or timeout is not None
    if cancel and (waiting or retry):
        raise click.UsageError("--cancel does not go with --wait, --timeout or --retry")
    if cancel or retry:
        action, verb = ("cancel", "Cancelled") if cancel else ("retry", "Queued again")
        made = client.call("POST", f"{path}/{action}")
        if not waiting:
            if client.as_json:
                print_json(made)
                return
            out().print(f"{verb} decomposition {made['id']}: {styled(made['status'])}")
            return
    if not waiting:
        print_decomposition(client, client.call("GET", path))
        return
    made = waited_for(client, path, 300.0 if timeout is None else timeout)
    print_decomposition(client, made)
    if made["status"] != "succeeded":
        fail(f"decomposition {made['id']} {made['status']}: {made.get('error') or 'no tasks made'}")


# --- events ------------------------------------------------------------------------------------


def sse_messages(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """Server-Sent Events messages (comments dropped) from a stream of lines; one with an id
    and no data only says where the stream stands."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in fields or "id" in fields:
                yield fields
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data" and "data" in fields:
            fields["data"] += "\n" + value
        else:
            fields[name] = value
    if "data" in fields or "id" in fields:
        yield fields


def stream_lines(response: requests.Response) -> Iterator[str]:
    """The body's lines as they arrive (each chunk handed over at once, not per 512 bytes)."""
    pending = b""
    for chunk in response.iter_content(chunk_size=None):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.rstrip(b"\r").decode("utf-8", "replace")
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8", "replace")


def logfmt(value: Any) -> str:
    """A value for `key=value`: bare when unambiguous, else JSON (quoted)."""
    if isinstance(value, str) and value and not re.search(r"[\s=\"]", value):
        return value
    return json.dumps(value, ensure_ascii=False)


def event_line(message: dict[str, str]) -> str:
    """`2024-05-01T12:00:00.123Z  1714564800123-0  task.completed  task_id=... key=value`"""
    entry_id = message.get("id", "")
    when = ""
    millis = entry_id.partition("-")[0]
    if millis.isdigit():
        moment = datetime.fromtimestamp(int(millis) / 1000, UTC)
        when = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    try:
        data = json.loads(message.get("data", ""))
    except ValueError:
        data = message.get("data", "")
    if isinstance(data, dict):
        details = " ".join(
            f"{key}={logfmt(value)}" for key, value in data.items() if value is not None
        )
    else:
        details = str(data)
    parts = [when, entry_id, message.get("event", "message"), details]
    return "  ".join(p for p in parts if p)


@cli.command("events")
@click.argument("team_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events (Ctrl-C stops).")
@click.option(
    "--timeout",
    "-t",
    type=click.FloatRange(min=0, max=3600),
    default=None,
    help="Stop after this many seconds (implies --follow).",
)
@click.option(
    "--since",
    default=None,
    metavar="EVENT_ID",
    help="Start after this event id (0: everything still kept).",
)
@pass_client
def events_cmd(
    client: Client, team_id: str, follow: bool, timeout: float | None, since: str | None
) -> None:
    """The events of TEAM_ID, one line each: time, id, kind, details.

    Without --follow or --timeout: the events still kept, then exit. With --follow: new events
    (after --since when given) until Ctrl-C; with --timeout: for that many seconds."""
    following = follow or timeout is not None
    deadline = None if timeout is None else time.monotonic() + timeout
    position = since if following else (since or "0")
    count = 0
    try:
        while True:
            params: dict[str, Any] = {"timeout": 0}
            if following and deadline is not None:
                params["timeout"] = max(0.0, deadline - time.monotonic())
            elif following:
                del params["timeout"]
            if position is not None:
                params["last_event_id"] = position
            position, shown = _print_events(client, team_id, params, position)
            count += shown
            # The server ends a stream after a while (its lifetime): a follower resumes after
            # the last event it saw, as EventSource does, until its own time is up.
            if not following:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
    except KeyboardInterrupt:
        pass
    if not following and count == 0 and not client.as_json:
        err().print("[dim]No events kept for this team.[/]")


def _print_events(
    client: Client, team_id: str, params: dict[str, Any], position: str | None
) -> tuple[str | None, int]:
    """Print one connection's events until the server ends it: (its last position, how
    many)."""
    # The server sends a heartbeat every 2 s; a silent minute means the connection is gone.
    response = client.request(
        "GET",
        f"/teams/{team_id}/events",
        params=params,
        stream=True,
        headers={"Accept": "text/event-stream"},
        timeout=(client.timeout, 60.0),
    )
    count = 0
    try:
        for message in sse_messages(stream_lines(response)):
            position = message.get("id") or position
            if "data" not in message:
                continue
            if message.get("event") == "error":
                fail(f"the event stream ended: {message.get('data', '')}")
            if client.as_json:
                click.echo(json.dumps(message))
            else:
                click.echo(event_line(message))
            count += 1
    except requests.RequestException as exc:
        fail(f"the event stream broke: {type(exc).__name__}", unreachable=True)
    finally:
        response.close()
    return position, count


# --- demo --------------------------------------------------------------------------------------


@cli.command("demo")
def demo_cmd() -> None:
    """Run `make demo`: API, worker and beat as processes, a goal worked to completion."""
    from orchestration import demo

    sys.exit(demo.main())


accept_global_options_after_subcommands(cli)


def main(argv: list[str] | None = None) -> None:
    """The `orch` console script."""
    cli.main(args=argv, prog_name="orch")


if __name__ == "__main__":
    main()
