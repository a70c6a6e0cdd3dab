"""Planner, executor and reviewer over an OpenAI-compatible chat-completions server.

JSON answers (plans, verdicts) are validated with the same schemas as the API; an invalid answer
is sent back to the model with the validation errors, a bounded number of times, then
AgentError. The executor's AgentError becomes ExecutionFailed, so the engine retries the task and
finally fails it with the message.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError

from orchestration.agents.base import (
    AgentProfile,
    DependencyOutput,
    ExecutionFailed,
    ExecutionResult,
    ReviewVerdict,
    TaskContext,
)
from orchestration.agents.llm_client import ChatClient, ChatResponse, RequestRefused, Usage
from orchestration.errors import AgentError
from orchestration.plans import (
    MAX_DEPTH_LIMIT,
    MAX_PLAN_NODES,
    SKILL_RULE,
    PlanSchema,
    iter_nodes,
    plan_cycle,
)
from orchestration.scoring import SPECIALIZATION_PRESETS

DEFAULT_JSON_ATTEMPTS = 3
MAX_DEPENDENCY_CHARS = 6_000
MAX_DEPENDENCIES_CHARS = 24_000
MAX_INPUT_CHARS = 8_000
MAX_OUTPUT_CHARS = 20_000
MAX_ECHO_CHARS = 4_000
SUGGESTED_MAX_NODES = 40

Messages = list[dict[str, str]]


class InvalidAnswer(ValueError):
    """The model's answer cannot be used; the message says why (and goes back to the model)."""


CUT_OFF = "the model's answer was cut off (finish_reason=length)"


def _cut_off(response: ChatResponse) -> bool:
    """The server stopped the answer at its token limit: what came is not the whole answer."""
    return response.finish_reason == "length"


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… [{len(text) - limit} more characters cut]"


def parse_json_object(content: str) -> dict[str, Any]:
    """The JSON object in a model's answer, tolerating code fences and text around it."""
    text = content.strip()
    fence = re.match(r"^```[a-zA-Z0-9_-]*\s*\n(.*?)\n?```\s*$", text, re.DOTALL)
    if fence:
        text = fence.group(1).strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as first:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            raise InvalidAnswer(
                f"the answer is not JSON ({first.msg} at position {first.pos})"
            ) from first
        try:
            data = json.loads(text[start : end + 1])
        except json.JSONDecodeError as exc:
            raise InvalidAnswer(f"the answer is not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise InvalidAnswer(f"the answer must be a JSON object, not a {type(data).__name__}")
    return data


class _Conversation:
    """Ask, validate, re-ask with the errors; bounded. Tracks the tokens and cost of every call."""

    def __init__(
        self,
        client: ChatClient,
        messages: Messages,
        what: str,
        stop: threading.Event | None = None,
    ) -> None:
        self.client = client
        self.messages = list(messages)
        self.what = what
        self.stop = stop  # set: no further call or retry starts, a retry's wait ends
        self.usage = Usage()
        self.cost = Decimal(0)

    def ask(self, **options: Any) -> ChatResponse:
        try:
            response = self.client.chat(self.messages, cancelled=self.stop, **options)
        except AgentError as exc:
            self.spent(exc)
            raise
        self.usage = self.usage + response.usage
        self.cost += response.cost
        return response

    def spent(self, error: AgentError) -> AgentError:
        """error, carrying what the earlier answers of this conversation were billed."""
        error.tokens, error.cost = self.usage.total_tokens, self.cost
        return error

    def reask(self, answer: str, problem: str) -> None:
        self.messages.append({"role": "assistant", "content": _clip(answer, MAX_ECHO_CHARS)})
        self.messages.append(
            {
                "role": "user",
                "content": (
                    f"That answer cannot be used: {problem}\n"
                    f"Answer again with the corrected {self.what} as one JSON object only."
                ),
            }
        )


# --------------------------------------------------------------------------------------------
# Planner

PLANNER_SYSTEM = """\
You are the manager of a team of AI agents. You break a goal down into a tree of tasks that the \
workers of your team can carry out, and say which tasks need the results of which others.

Answer with one JSON object, a TaskNode, and nothing else. A TaskNode has these fields:
- "key": a short id, unique in the plan, such as "research-market"
- "title": required; an imperative sentence, at most 500 characters
- "description": what exactly to do and what to deliver
- "acceptance_criteria": a list of checkable statements that say when the task is done
- "required_skills": a list of skill names, taken from the team's skills when possible; \
{skill_rule}
- "estimated_tokens": an integer, the tokens an agent will likely use
- "priority": an integer from 0 to 10 (10 is the most urgent; 5 is normal)
- "depends_on": a list of keys of other nodes of this plan that must be completed first
- "subtasks": a list of TaskNode objects

Rules:
- The root node stands for the whole goal; its subtasks break it down. A node with subtasks is a \
summary: it is never assigned itself and completes when its subtasks complete.
- The root is at depth 0, its subtasks at depth 1, and so on. No node may be deeper than the \
maximum depth given.
- Use depends_on wherever a task needs another task's result. Never depend on a node's own \
ancestor or descendant and never make a cycle.
- Each leaf task is done by one worker: give it 1 to 3 required_skills and 1 to 4 acceptance \
criteria.
- Keep the plan focused: usually 3 to {suggested} nodes, never more than {max_nodes}."""


def _team_lines(team: Sequence[AgentProfile]) -> tuple[list[str], list[str]]:
    lines: list[str] = []
    skills: dict[str, None] = {}
    for member in team:
        own = dict(SPECIALIZATION_PRESETS.get(member.specialization or "", {}))
        own.update(member.skills or {})
        described = ", ".join(f"{k} {float(v):.1f}" for k, v in sorted(own.items()))
        lines.append(
            f"- {member.agent_id} ({member.role}, {member.specialization or 'Generalist'})"
            + (f": {described}" if described else "")
        )
        if (member.role or "").lower() != "manager" or len(team) == 1:
            for skill in sorted(own):
                skills.setdefault(skill, None)
    return lines, list(skills)


def planner_messages(goal: str, team: Sequence[AgentProfile], max_depth: int) -> Messages:
    lines, skills = _team_lines(team)
    depth_rule = (
        "Answer with the root node only, without subtasks."
        if max_depth == 0
        else f"Nodes may be at most {max_depth} level(s) below the root."
    )
    user = (
        f"Goal:\n{goal.strip()}\n\n"
        f"Maximum depth: {max_depth}. {depth_rule}\n\n"
        "Team:\n" + ("\n".join(lines) if lines else "- (no members listed)") + "\n\n"
        "Skills on the team: " + (", ".join(skills) if skills else "(none listed)") + "\n\n"
        "Answer with the TaskNode JSON object only."
    )
    system = PLANNER_SYSTEM.format(
        suggested=SUGGESTED_MAX_NODES, max_nodes=MAX_PLAN_NODES, skill_rule=SKILL_RULE
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _validation_lines(messages: Any, path: str = "") -> list[str]:
    """marshmallow's nested messages as one line per field, e.g.
    'subtasks[0].priority: Not a valid integer.', so the model sees where and why."""
    if isinstance(messages, dict):
        lines: list[str] = []
        for name, inner in messages.items():
            if isinstance(name, int):
                where = f"{path}[{name}]"
            elif name == "_schema":
                where = path
            else:
                where = f"{path}.{name}" if path else str(name)
            lines.extend(_validation_lines(inner, where))
        return lines
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return [f"{path or 'the plan'}: {' '.join(messages)}"]
    if isinstance(messages, list):
        return [line for inner in messages for line in _validation_lines(inner, path)]
    return [f"{path or 'the plan'}: {messages}"]


def tidy_answer(data: dict[str, Any]) -> dict[str, Any]:
    """What models commonly write for a valid plan, in the schema's terms (in place): null for
    an optional field it leaves out, and 5.0 for the integer 5. Everything else is left to the
    schema."""
    stack: list[Any] = [data]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        for name, value in list(node.items()):
            if value is None:
                del node[name]
            elif isinstance(value, float) and value.is_integer():
                node[name] = int(value)
        if isinstance(node.get("subtasks"), list):
            stack.extend(node["subtasks"])
    return data


def validate_plan(data: dict[str, Any], max_depth: int) -> dict[str, Any]:
    """A plan valid under PlanSchema, without cycles, cut to max_depth, every node keyed.

    Raises InvalidAnswer naming what is wrong."""
    if "title" not in data and len(data) == 1:
        (inner,) = data.values()
        if isinstance(inner, dict):
            data = inner  # {"plan": {...}}
    try:
        plan = PlanSchema().load(tidy_answer(data))
    except ValidationError as exc:
        raise InvalidAnswer(
            "it does not match the TaskNode schema:\n"
            + "\n".join(f"- {line}" for line in _validation_lines(exc.messages))
        ) from exc
    cycle = plan_cycle(plan)
    if cycle:
        raise InvalidAnswer(
            "its dependencies form a cycle: "
            + " -> ".join(cycle)
            + " (a node may not depend on its own ancestor or descendant, nor close a loop)"
        )
    _fill_keys(plan)
    pruned = prune_plan(plan, max_depth)
    # Folding nodes deeper than max_depth into their ancestors can close a loop the plan as
    # written did not have (a1 -> b -> a2 under one parent becomes a -> b -> a).
    cycle = plan_cycle(pruned)
    if cycle:
        raise InvalidAnswer(
            f"it has nodes deeper than the maximum depth {max_depth}; merged into their "
            "ancestors, as they must be, their dependencies form a cycle: "
            + " -> ".join(cycle)
            + f". Keep every node within depth {max_depth}, with dependencies between the "
            "nodes you keep."
        )
    return pruned


def prune_plan(root: dict[str, Any], max_depth: int) -> dict[str, Any]:
    """Nodes deeper than max_depth are folded into their deepest kept ancestor, which takes on
    their dependencies, skills and criteria and mentions them in its description; dependencies
    on them move to it."""
    plan = copy.deepcopy(root)
    stand_in: dict[int, dict[str, Any]] = {}
    nodes = list(iter_nodes(plan))
    for node, depth, parent in nodes:
        if depth <= max_depth:
            stand_in[id(node)] = node
        else:
            assert parent is not None
            stand_in[id(node)] = stand_in[id(parent)]
    key_target = {
        node["key"]: stand_in[id(node)] for node, _, _ in nodes if node.get("key") is not None
    }
    folded: dict[int, list[dict[str, Any]]] = {}
    for node, depth, _ in nodes:
        if depth > max_depth:
            folded.setdefault(id(stand_in[id(node)]), []).append(node)
    kept = [node for node, depth, _ in nodes if depth <= max_depth]
    for node in kept:
        extra = folded.get(id(node), [])
        deps: list[str] = list(node.get("depends_on") or [])
        for child in extra:
            deps.extend(child.get("depends_on") or [])
        resolved: list[str] = []
        for key in deps:
            target = key_target.get(key)
            if target is None or target is node:
                continue
            target_key = target.get("key")
            if target_key and target_key not in resolved:
                resolved.append(target_key)
        if "depends_on" in node or resolved:
            node["depends_on"] = resolved
        if extra:
            node.pop("subtasks", None)
            titles = "\n".join(f"- {child['title']}" for child in extra)
            description = (node.get("description") or "").rstrip()
            node["description"] = _clip(
                (description + "\n\n" if description else "") + "Also covers:\n" + titles, 20_000
            )
            skills = list(node.get("required_skills") or [])
            criteria = list(node.get("acceptance_criteria") or [])
            tokens = node.get("estimated_tokens")
            folded_tokens = 0
            for child in extra:
                for skill in child.get("required_skills") or []:
                    if skill not in skills:
                        skills.append(skill)
                for criterion in child.get("acceptance_criteria") or []:
                    if criterion not in criteria:
                        criteria.append(criterion)
                folded_tokens += int(child.get("estimated_tokens") or 0)
            node["required_skills"] = skills[:20]
            node["acceptance_criteria"] = criteria[:50]
            if tokens is None and folded_tokens:
                node["estimated_tokens"] = min(folded_tokens, 10_000_000)
        elif node.get("subtasks") == []:
            node.pop("subtasks")
    return plan


def _fill_keys(plan: dict[str, Any]) -> None:
    used = {node["key"] for node, _, _ in iter_nodes(plan) if node.get("key")}
    counter = 0
    for node, _, _ in iter_nodes(plan):
        if node.get("key"):
            continue
        while True:
            counter += 1
            key = "root" if counter == 1 and "root" not in used else f"n{counter}"
            if key not in used:
                break
        node["key"] = key
        used.add(key)


class LLMPlanner:
    def __init__(
        self, client: ChatClient, *, attempts: int = DEFAULT_JSON_ATTEMPTS, temperature: float = 0.2
    ) -> None:
        self.client = client
        self.attempts = max(1, attempts)
        self.temperature = temperature

    def plan(self, goal: str, team: list[AgentProfile], max_depth: int) -> dict[str, Any]:
        return self.plan_with_usage(goal, team, max_depth)[0]

    def plan_with_usage(
        self,
        goal: str,
        team: Sequence[AgentProfile],
        max_depth: int,
        stop: threading.Event | None = None,
    ) -> tuple[dict[str, Any], Usage, Decimal]:
        """The plan, and the tokens and cost of every call it took; `stop` set ends the
        asking (AgentError)."""
        max_depth = max(0, min(int(max_depth), MAX_DEPTH_LIMIT))
        messages = planner_messages(goal, team, max_depth)
        talk = _Conversation(self.client, messages, "TaskNode", stop)
        problem = ""
        for attempt in range(1, self.attempts + 1):
            response = talk.ask(temperature=self.temperature, json_object=True)
            answer = response.content
            try:
                if _cut_off(response):
                    raise InvalidAnswer(f"{CUT_OFF}; give a shorter plan")
                plan = validate_plan(parse_json_object(answer), max_depth)
            except InvalidAnswer as exc:
                problem = str(exc)
                if attempt < self.attempts:
                    talk.reask(answer, problem)
                continue
            return plan, talk.usage, talk.cost
        raise talk.spent(
            AgentError(
                f"the planner model gave no valid plan in {self.attempts} attempts; "
                f"last problem: {_clip(problem, 1_000)}"
            )
        )


# --------------------------------------------------------------------------------------------
# Executor

DELIVERABLE_RULES = (
    "Your answer is the deliverable itself, not a plan to produce it. End with a section "
    '"Acceptance criteria" that says, for each criterion, how your answer meets it.'
)

SPECIALIZATION_PROMPTS: dict[str, str] = {
    "Technical Executor": (
        "You are a senior software engineer on a team of AI agents: you write, debug, test and "
        "deploy software. Give complete, working code in fenced blocks, state your assumptions "
        "and say how the result can be verified."
    ),
    "Content Creator": (
        "You are a professional writer and editor on a team of AI agents: you research, write, "
        "edit and document. Produce polished, well-structured text that is ready to publish, "
        "in a tone suited to its audience."
    ),
    "Researcher/Analyzer": (
        "You are a research analyst on a team of AI agents: you research, analyse data and "
        "summarise findings. Be factual, show your method, separate facts from estimates and "
        "name your sources where you can."
    ),
}
GENERALIST_PROMPT = (
    "You are a capable generalist on a team of AI agents. Do the task completely and precisely, "
    "using the skills it calls for."
)


def executor_system_prompt(agent: AgentProfile) -> str:
    base = SPECIALIZATION_PROMPTS.get(agent.specialization or "", GENERALIST_PROMPT)
    if agent.skills:
        skills = ", ".join(f"{k} ({float(v):.1f})" for k, v in sorted(agent.skills.items()))
        base += f" Your particular skills: {skills}."
    return f"{base}\n\n{DELIVERABLE_RULES}"


def _render_output(output: Mapping[str, Any] | None) -> str:
    if output is None:
        return "(no output recorded)"
    result = output.get("result")
    if isinstance(result, str) and set(output) <= {"result", "agent", "model", "criteria"}:
        return result
    return json.dumps(output, indent=1, ensure_ascii=False, default=str)


def _dependencies_section(outputs: Sequence[DependencyOutput]) -> str:
    parts: list[str] = []
    budget = MAX_DEPENDENCIES_CHARS
    for dep in outputs:
        text = _clip(_render_output(dep.output), min(MAX_DEPENDENCY_CHARS, max(budget, 200)))
        budget -= len(text)
        parts.append(f"### {dep.title} (task {dep.task_id})\n{text}")
    return "\n\n".join(parts)


def executor_messages(ctx: TaskContext) -> Messages:
    sections = [f"# Task: {ctx.title}"]
    if ctx.description:
        sections.append(ctx.description.strip())
    if ctx.acceptance_criteria:
        sections.append(
            "## Acceptance criteria\n" + "\n".join(f"- {c}" for c in ctx.acceptance_criteria)
        )
    if ctx.required_skills:
        sections.append("## Skills this task calls for\n" + ", ".join(ctx.required_skills))
    data = {k: v for k, v in (ctx.input_data or {}).items() if k != "simulate"}
    if data:
        rendered = json.dumps(data, indent=1, ensure_ascii=False, default=str)
        sections.append("## Input data\n```json\n" + _clip(rendered, MAX_INPUT_CHARS) + "\n```")
    if ctx.dependency_outputs:
        sections.append(
            "## Results of the tasks this task depends on\n"
            + _dependencies_section(ctx.dependency_outputs)
        )
    if ctx.feedback or ctx.revision:
        sections.append(
            f"## Reviewer feedback (revision {ctx.revision})\n"
            "Your previous answer to this task was rejected by the reviewer:\n"
            f"{(ctx.feedback or '(no feedback given)').strip()}\n\n"
            "Produce a complete new answer that fixes every point."
        )
    return [
        {"role": "system", "content": executor_system_prompt(ctx.agent)},
        {"role": "user", "content": "\n\n".join(sections)},
    ]


class LLMExecutor:
    def __init__(self, client: ChatClient, *, temperature: float = 0.3) -> None:
        self.client = client
        self.temperature = temperature

    def execute(self, ctx: TaskContext) -> ExecutionResult:
        try:
            response = self.client.chat(
                executor_messages(ctx), temperature=self.temperature, cancelled=ctx.cancelled
            )
        except AgentError as exc:
            retryable = not isinstance(exc, RequestRefused)
            raise ExecutionFailed(str(exc), retryable=retryable) from exc
        tokens = response.usage.total_tokens
        if _cut_off(response):
            # Part of a deliverable is not the deliverable: another attempt, not a result.
            raise ExecutionFailed(CUT_OFF, tokens=tokens, cost=response.cost)
        if not response.content.strip():
            raise ExecutionFailed(
                "the model returned an empty answer", tokens=tokens, cost=response.cost
            )
        return ExecutionResult(
            output={
                "result": response.content,
                "agent": ctx.agent.agent_id,
                "model": response.model,
            },
            tokens=tokens,
            cost=response.cost,
        )


# --------------------------------------------------------------------------------------------
# Reviewer

REVIEWER_SYSTEM = """\
You are the manager of a team of AI agents. You review a worker's output for a task against \
the task's acceptance criteria. Accept it only when every criterion is met.

Answer with one JSON object and nothing else:
{"accepted": true or false, "feedback": "..."}
When you reject, the feedback names each unmet criterion and says what to change. When you \
accept, the feedback is one sentence saying why."""


def reviewer_messages(ctx: TaskContext, output: Mapping[str, Any]) -> Messages:
    criteria = "\n".join(f"{i}. {c}" for i, c in enumerate(ctx.acceptance_criteria, 1))
    user = (
        f"# Task: {ctx.title}\n"
        + (f"{ctx.description.strip()}\n" if ctx.description else "")
        + f"\n## Acceptance criteria\n{criteria}\n\n"
        + f"## Output of {ctx.agent.agent_id} (revision {ctx.revision})\n"
        + _clip(_render_output(output), MAX_OUTPUT_CHARS)
        + "\n\nAnswer with the JSON verdict only."
    )
    return [{"role": "system", "content": REVIEWER_SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(data: Mapping[str, Any]) -> tuple[bool, str]:
    accepted = data.get("accepted")
    if isinstance(accepted, str) and accepted.strip().lower() in ("true", "false"):
        accepted = accepted.strip().lower() == "true"
    if not isinstance(accepted, bool):
        raise InvalidAnswer('"accepted" must be true or false')
    feedback = data.get("feedback", "")
    if feedback is None:
        feedback = ""
    if not isinstance(feedback, str):
        raise InvalidAnswer('"feedback" must be a string')
    if not accepted and not feedback.strip():
        raise InvalidAnswer('"feedback" must name the unmet criteria when "accepted" is false')
    return accepted, feedback.strip()


class LLMReviewer:
    def __init__(
        self, client: ChatClient, *, attempts: int = DEFAULT_JSON_ATTEMPTS, temperature: float = 0.0
    ) -> None:
        self.client = client
        self.attempts = max(1, attempts)
        self.temperature = temperature

    def review(self, ctx: TaskContext, output: dict[str, Any]) -> ReviewVerdict:
        if not ctx.acceptance_criteria:
            return ReviewVerdict(accepted=True, feedback="No acceptance criteria: accepted.")
        talk = _Conversation(self.client, reviewer_messages(ctx, output), "verdict")
        problem = ""
        for attempt in range(1, self.attempts + 1):
            response = talk.ask(temperature=self.temperature, json_object=True)
            answer = response.content
            try:
                if _cut_off(response):
                    raise InvalidAnswer(f"{CUT_OFF}; keep the feedback short")
                accepted, feedback = parse_verdict(parse_json_object(answer))
            except InvalidAnswer as exc:
                problem = str(exc)
                if attempt < self.attempts:
                    talk.reask(answer, problem)
                continue
            return ReviewVerdict(
                accepted=accepted,
                feedback=feedback or ("Accepted." if accepted else ""),
                tokens=talk.usage.total_tokens,
                cost=talk.cost,
            )
        raise talk.spent(
            AgentError(
                f"the reviewer model gave no valid verdict in {self.attempts} attempts; "
                f"last problem: {_clip(problem, 1_000)}"
            )
        )
