"""`ai-director`: a command-line client of the service's HTTP API, plus `serve` to run one.

    ai-director serve                                   # the same start-up as `python -m app`
    ai-director caption เทคโซน "เปิดตัวเมาส์เกมมิ่ง" --platform instagram --stream
    ai-director check CoffeeLab "☕ Cold Brew #CoffeeLab" --json
    AI_DIRECTOR_URL=http://gpu-box:8000 ai-director brands
    ai-director batch calendar.csv -o out.csv           # a month's content calendar in one command

Each command is one request: its arguments become the JSON body. The answer's text goes to
stdout and a short on-brand summary to stderr, or with --json the server's JSON body as it is.
`batch` sends a calendar's rows in chunks and writes every result to a file.
Exit status: 0 success, 1 the API refused or the server could not be reached (or, for `batch`,
any row failed), 2 bad usage.
"""

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self
from urllib.parse import quote

import click
import httpx
from httpx_sse import SSEError, connect_sse

from app.platforms import PLATFORMS

DEFAULT_URL = "http://127.0.0.1:8000"  # where the server listens with AI_DIRECTOR_HOST / _PORT unset
# Above the server's own AI_DIRECTOR_REQUEST_TIMEOUT_S (120 s), so that its 504, which says
# what to change, arrives before the client gives up.
DEFAULT_TIMEOUT_S = 180.0


class Failure(click.ClickException):
    """A request that did not succeed: the lines shown on stderr, exit status 1."""

    exit_code = 1

    def __init__(self, *lines: str):
        super().__init__("\n".join(lines))

    def show(self, file=None) -> None:
        click.echo(f"error: {self.message}", err=True)


class Client:
    """The API over HTTP: JSON in; JSON or server-sent events out; every failure a Failure."""

    def __init__(self, url: str, api_key: str | None, timeout_s: float):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url
        self.http = httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(timeout_s, connect=10.0))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.http.close()

    def get(self, path: str) -> dict:
        with self._transport():
            return self._json(self.http.get(path))

    def post(self, path: str, body: dict) -> dict:
        with self._transport():
            return self._json(self.http.post(path, json=body))

    def stream(self, path: str, body: dict) -> Iterator[tuple[str, dict]]:
        """(event, data) as they arrive: `delta` events, then `done` (or a Failure for `error`)."""
        with self._transport(), connect_sse(self.http, "POST", path, json=dict(body, stream=True)) as source:
            if source.response.status_code != 200:  # refused before the first event: a plain JSON error
                source.response.read()
                self._json(source.response)
            try:
                for event in source.iter_sse():
                    if event.event == "error":
                        raise api_failure(source.response.status_code, event.json())
                    yield event.event, event.json()
                    if event.event == "done":
                        return
            except SSEError as exc:
                raise Failure(f"{self.url}{path} did not answer with an event stream: {exc}") from exc
        raise Failure(f"the stream from {self.url}{path} ended before the answer was complete; try again")

    def _json(self, response: httpx.Response) -> dict:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success and isinstance(body, dict):
            return body
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            raise api_failure(response.status_code, body)
        raise Failure(f"HTTP {response.status_code} from {response.url}: {response.text[:300].strip()}",
                      f"is {self.url} an AI Director server?")

    @contextmanager
    def _transport(self):
        """Network failures as sentences that say what to do."""
        try:
            yield
        except httpx.ConnectError as exc:
            raise Failure(f"cannot reach the AI Director server at {self.url} ({exc}).",
                          "Start one with `ai-director serve` (or `python -m app`), "
                          "or point --url / AI_DIRECTOR_URL at a running server.") from exc
        except httpx.TimeoutException as exc:
            raise Failure(f"{self.url} did not answer in time ({type(exc).__name__}); "
                          "raise --timeout, or ask for fewer tokens with --max-new-tokens.") from exc
        except httpx.TransportError as exc:
            raise Failure(f"the connection to {self.url} failed: {exc}") from exc


def api_failure(status: int, body: dict) -> Failure:
    """The one error shape, {"error": {"code", "message", "param"?, ...}}, as lines for stderr."""
    error = body["error"]
    lines = [f"{error.get('message', 'the request failed')} ({error.get('code', 'error')}, HTTP {status})"]
    if error.get("param"):
        lines.append(f"  param: {error['param']}")
    if error.get("suggestions"):
        lines.append(f"  did you mean: {', '.join(error['suggestions'])}")
    for problem in (error.get("errors") or [])[1:]:  # the first is the message above
        lines.append(f"  also: {problem.get('message')}")
    return Failure(*lines)


# --- output ---------------------------------------------------------------------------

def print_json(body: dict) -> None:
    click.echo(json.dumps(body, ensure_ascii=False, indent=2))


def verdict(brand: str, checks: dict) -> list[str]:
    """The on-brand verdict and its reasons, a few lines for a person."""
    if checks["on_brand"]:
        return [f"{brand}: on brand (score {checks['score']:.2f})"]
    return [f"{brand}: NOT on brand (score {checks['score']:.2f})", *(f"  - {r}" for r in checks["reasons"])]


def summary(body: dict) -> list[str]:
    lines = verdict(body["brand"], body["checks"]) if body.get("checks") else []
    if body.get("finish_reason") == "length":
        lines.append("  note: cut at the token limit; raise --max-new-tokens for the whole text")
    match = body.get("brand_match") or {}
    if match.get("method") == "fuzzy":
        lines.append(f"  note: '{match['matched']}' matched by spelling (score {match['score']:.0f})")
    return lines


def show_generation(client: Client, path: str, body: dict, stream: bool, as_json: bool) -> None:
    """Send one generation request and print its answer: text (as it arrives with --stream), or the JSON."""
    body = {k: v for k, v in body.items() if v is not None}  # unset options take the server's defaults
    if not stream:
        answer = client.post(path, body)
        if as_json:
            return print_json(answer)
        click.echo(answer["text"])
    else:
        answer, written = None, False
        try:
            for event, data in client.stream(path, body):
                if event == "done":
                    answer = data
                elif event == "delta" and not as_json:
                    sys.stdout.write(data["text"])
                    sys.stdout.flush()
                    written = True
        finally:
            if written:  # end the line of text, even when an error event follows it
                click.echo()
        if as_json:
            return print_json(answer)
        if not written:
            click.echo(answer["text"])
    for line in summary(answer):
        click.echo(line, err=True)


# --- commands -------------------------------------------------------------------------

def client_of(ctx: click.Context) -> Client:
    """The group's options as a Client, closed when the command ends."""
    url, api_key, timeout_s = ctx.obj
    return ctx.with_resource(Client(url, api_key, timeout_s))


def _url(ctx, param, value: str) -> str:
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise click.BadParameter(f"must be an http:// or https:// URL, not {value!r}")
    return value


def _api_key(ctx, param, value: str | None) -> str | None:
    # The server only accepts printable ASCII keys; anything else could not travel in a header.
    if value and not all(0x21 <= ord(c) <= 0x7E for c in value):
        raise click.BadParameter("must be printable ASCII without spaces, as the server's key is")
    return value or None


platform_option = click.option("--platform", type=click.Choice(PLATFORMS),
                               help="The platform it is for; its length and hashtag limits are checked.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the server's JSON body as it is.")


def generation_options(command):
    """The options every generation command shares: streaming, --json, and sampling."""
    for option in reversed([
        click.option("--stream", is_flag=True, help="Print the text as it is written."),
        json_option,
        click.option("--max-new-tokens", type=click.IntRange(1), help="Longest answer in tokens (the server caps it)."),
        click.option("--temperature", type=click.FloatRange(0, 2), help="0 = greedy; default from the model."),
        click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), help="Nucleus sampling mass."),
        click.option("--seed", type=click.IntRange(0, 2**31 - 1), help="Same seed + same input = same output."),
        click.option("--adapter", help="A served adapter's name (GET /adapters), or `none` for the base model."),
    ]):
        command = option(command)
    return command


def sampling(kwargs: dict) -> dict:
    return {k: kwargs[k] for k in ("max_new_tokens", "temperature", "top_p", "seed", "adapter")}


class ServeCommand(click.Command):
    """`serve --help` lists the settings, read from the settings object as `python -m app --help` does."""

    def format_epilog(self, ctx, formatter) -> None:
        from app.__main__ import settings_help

        formatter.write("\n" + settings_help() + "\n")


EXAMPLES = """\b
Examples:
  ai-director serve
  ai-director caption เทคโซน "เปิดตัวเมาส์เกมมิ่ง" --platform instagram --stream
  ai-director brief GreenLeaf "ให้ความรู้" "สร้างความเชื่อมั่น" --audience "คนรักสุขภาพ"
  ai-director check TechZone "☕ เริ่มเช้าใหม่กับ CoffeeLab #TechZone" --json
  ai-director --url http://gpu-box:8000 brands โกลว์แล็บ
  ai-director batch calendar.csv -o out.csv
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLES)
@click.option("--url", envvar="AI_DIRECTOR_URL", show_envvar=True, default=DEFAULT_URL, show_default=True,
              callback=_url, help="The server's base URL.")
@click.option("--api-key", envvar="AI_DIRECTOR_API_KEY", show_envvar=True, callback=_api_key,
              help="The server's API key, when it has one.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Seconds to wait for an answer.")
@click.version_option(package_name="ai-director", prog_name="ai-director", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None, timeout: float) -> None:
    """On-brand Thai marketing copy from an AI Director server."""
    ctx.obj = (url, api_key, timeout)


@cli.command(cls=ServeCommand)
def serve() -> None:
    """Start the server.

    The same start-up as `python -m app`, configured by the AI_DIRECTOR_* variables below.
    """
    from app.__main__ import serve as start

    sys.exit(start())


@cli.command()
@click.argument("brand")
@click.argument("context")
@platform_option
@click.option("--tone", help="Extra tone for this post.")
@generation_options
@click.pass_context
def caption(ctx, brand, context, platform, tone, stream, as_json, **kwargs) -> None:
    """Write a social caption.

    A caption for BRAND (name or alias, Thai or Latin) about CONTEXT: a launch, a promotion, a season.
    """
    body = {"brand": brand, "context": context, "platform": platform, "tone": tone, **sampling(kwargs)}
    show_generation(client_of(ctx), "/caption", body, stream, as_json)


@cli.command("adapt-voice")
@click.argument("brand")
@click.argument("message")
@platform_option
@click.option("--tone", help="Extra tone for this message.")
@generation_options
@click.pass_context
def adapt_voice(ctx, brand, message, platform, tone, stream, as_json, **kwargs) -> None:
    """Rewrite a message in a brand's voice.

    MESSAGE, a generic announcement, rewritten in BRAND's voice.
    """
    body = {"brand": brand, "message": message, "platform": platform, "tone": tone, **sampling(kwargs)}
    show_generation(client_of(ctx), "/adapt-voice", body, stream, as_json)


@cli.command()
@click.argument("brand")
@click.argument("objectives", nargs=-1, required=True)
@click.option("--audience", help="Who the campaign is for.")
@platform_option
@generation_options
@click.pass_context
def brief(ctx, brand, objectives, audience, platform, stream, as_json, **kwargs) -> None:
    """Write a campaign brief.

    A brief for BRAND that serves every OBJECTIVE (1 to 10; quote each one that has spaces).
    """
    body = {"brand": brand, "objectives": list(objectives), "audience": audience, "platform": platform,
            **sampling(kwargs)}
    show_generation(client_of(ctx), "/brief", body, stream, as_json)


@cli.command()
@click.argument("brand")
@click.argument("text")
@platform_option
@json_option
@click.pass_context
def check(ctx, brand, text, platform, as_json) -> None:
    """Check any copy against a brand.

    The on-brand verdict on TEXT, written by a person or a model, for BRAND: the brand guide as a
    linter. The exit status is 0 whatever the verdict; use --json and `checks.on_brand` to gate on it.
    """
    body = {"brand": brand, "text": text, **({"platform": platform} if platform else {})}
    answer = client_of(ctx).post("/check", body)
    if as_json:
        return print_json(answer)
    for line in verdict(answer["brand"], answer["checks"]):
        click.echo(line)


@cli.command()
@click.argument("name", required=False)
@json_option
@click.pass_context
def brands(ctx, name, as_json) -> None:
    """List the brands, or show one.

    Every brand the server knows, or with NAME (name or alias, typos tolerated) its whole record.
    """
    client = client_of(ctx)
    answer = client.get(f"/brands/{quote(name, safe='')}" if name else "/brands")
    if as_json:
        return print_json(answer)
    if name:
        import yaml  # a record of nested lists reads best as YAML

        click.echo(yaml.safe_dump(answer["brand"], allow_unicode=True, sort_keys=False, width=100), nl=False)
        return
    for brand in answer["brands"]:
        aliases = f" ({', '.join(brand['aliases'])})" if brand["aliases"] else ""
        click.echo(f"{brand['name']}{aliases}  {brand['industry']}".rstrip())
    click.echo(f"{answer['count']} brands, brands.json version {answer['brand_version']}", err=True)


BATCH_CHUNK = 20  # items per request: the progress bar moves every chunk; the server allows 200 by default
BATCH_RETRIES = 5  # a full queue (429) is waited out this many times, as its Retry-After says


def send_batch(client: Client, rows: list) -> list[dict]:
    """One chunk of a calendar through POST /batch; a refused chunk names its calendar rows."""
    for attempt in range(BATCH_RETRIES + 1):
        with client._transport():
            response = client.http.post("/batch", json={"items": [row.item for row in rows]})
        if response.status_code != 429 or attempt == BATCH_RETRIES:
            break
        wait = response.headers.get("retry-after", "")
        time.sleep(min(int(wait), 30) if wait.isdigit() else 1)
    try:
        return client._json(response)["results"]
    except Failure as exc:  # `items[3]` of this chunk is a row of the calendar
        named = re.sub(r"items\[(\d+)\]", lambda m: f"row {rows[int(m[1])].number}", exc.message)
        raise Failure(*named.splitlines()) from exc


def write_results(output, fmt: str, rows: list, results: list[dict]) -> None:
    """The results with each row's date, in calendar order, to OUTPUT or stdout."""
    from app.batch import COLUMNS, table, to_csv, to_jsonl

    dated = [{"index": r["index"], "date": row.date, **r} for row, r in zip(rows, results)]
    if fmt == "csv":
        lines = table([row.item for row in rows], results)
        content = to_csv([dict(line, date=row.date) for row, line in zip(rows, lines)], ("date", *COLUMNS))
    elif fmt == "jsonl":
        content = to_jsonl(dated)
    else:
        content = json.dumps({"results": dated}, ensure_ascii=False, indent=2) + "\n"
    data = content.encode("utf-8")
    if output is None:
        click.get_binary_stream("stdout").write(data)
    else:
        output.write_bytes(data)


@cli.command()
@click.argument("calendar", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Where to write the results; default stdout.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "json"]),
              help="Output format; default from OUTPUT's extension (.jsonl, .json), else csv.")
@click.option("--chunk-size", type=click.IntRange(1), default=BATCH_CHUNK, show_default=True,
              help="Items per request; at most the server's AI_DIRECTOR_MAX_BATCH_ITEMS.")
@click.pass_context
def batch(ctx, calendar, output, fmt, chunk_size) -> None:
    """Write a whole content calendar.

    Every row of CALENDAR, a CSV (UTF-8) with the columns brand, task (caption, adapt-voice or
    brief), its context / message / objectives (several separated by ";" or new lines), and
    optionally platform, tone, audience and date. The results go out in the same order with the
    date carried through: CSV in UTF-8 with a BOM (Excel shows the Thai), or JSON lines / JSON.
    A row that fails (an unknown brand, ...) has its error in the output; the exit status is then 1.
    """
    from app.batch import CalendarError, output_format, read_calendar

    try:
        rows = read_calendar(calendar.read_bytes())
    except CalendarError as exc:  # before anything is sent
        raise click.BadParameter(f"{click.format_filename(calendar)} {exc}", param_hint="'CALENDAR'") from exc
    fmt = fmt or output_format(output)
    client = client_of(ctx)
    results: list[dict] = []
    try:
        with click.progressbar(length=len(rows), label=f"Writing {len(rows)} items", show_pos=True,
                               file=sys.stderr) as bar:
            for start in range(0, len(rows), chunk_size):
                chunk = rows[start : start + chunk_size]
                results += [dict(r, index=start + r["index"]) for r in send_batch(client, chunk)]
                bar.update(len(chunk))
    except Failure as exc:
        if not results:
            raise
        write_results(output, fmt, rows[: len(results)], results)  # what was written before is kept
        where = click.format_filename(output) if output else "stdout"
        raise Failure(exc.message, f"the results of the {len(results)} rows before are written to {where}") from exc
    write_results(output, fmt, rows, results)
    failed = [(row, r) for row, r in zip(rows, results) if "error" in r]
    for row, r in failed:
        click.echo(f"  row {row.number}: {r['error']['message']} ({r['error']['code']}, HTTP {r['status']})", err=True)
    where = f"; written to {click.format_filename(output)}" if output else ""
    click.echo(f"{len(rows)} items: {len(rows) - len(failed)} succeeded, {len(failed)} failed{where}", err=True)
    if failed:
        ctx.exit(1)


# --- entry point ----------------------------------------------------------------------

def utf8_arguments(args: list[str]) -> list[str]:
    """Arguments as the UTF-8 the terminal sent: under a C or Latin-1 locale Python decodes
    them with the locale's codec, which turns Thai into escapes or mojibake."""
    fixed = []
    for arg in args:
        try:
            fixed.append(os.fsencode(arg).decode("utf-8"))
        except UnicodeError:  # not UTF-8 on the wire: leave it as the locale read it
            fixed.append(arg)
    return fixed


def main() -> None:
    """The `ai-director` console script."""
    # Thai must print whatever the locale says (LANG=C in containers and cron would make it ASCII).
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8")
    cli.main(args=utf8_arguments(sys.argv[1:]), prog_name="ai-director")


if __name__ == "__main__":
    main()
