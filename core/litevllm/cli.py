"""The ``lite`` command. Plugins add commands through ``register_commands``; nothing heavy is
imported until a command runs."""
from __future__ import annotations

import json
import logging
import re

import attrs
import click

from litevllm.config import load_toml_defaults, option_fields
from litevllm.version import __version__


def _json_dict(value):
    if value is None or isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not valid JSON: {e}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object")
    return parsed


def _click_option(f, field):
    """The click option of one engine option (``litevllm.config.opt``)."""
    m = field.metadata
    name = m.get("param", m.get("keyword", field.name))
    flags = m["flags"] or ("--" + name.replace("_", "-"),)
    kw = {"help": m["help"] or None}
    if field.default is attrs.NOTHING:
        kw["required"] = True
    elif m.get("invert"):
        kw.update(is_flag=True, default=False)
    elif isinstance(field.default, bool):
        kw.update(default=field.default, show_default=True)
        if "/" not in flags[0]:
            kw["is_flag"] = True
    else:
        kw.update(default=field.default, show_default=field.default is not None)
        if m.get("json"):
            kw.update(type=_json_dict, metavar="JSON")
        elif m["choices"]:
            kw["type"] = click.Choice(m["choices"])
        elif m.get("min") is not None:
            kw["type"] = click.IntRange(min=m["min"])
        elif field.type in ("int", "int | None"):
            kw["type"] = int
        elif field.type in ("float", "float | None"):
            kw["type"] = float
    return click.option(*flags, name, **kw)(f)


def engine_options(f):
    """Options shared by every command that builds an engine, generated from the attrs fields
    of ``litevllm.config`` (``option_fields``)."""
    for _, field, _ in reversed(option_fields()):
        if field.metadata["cli"]:
            f = _click_option(f, field)
    return f


def build_llm(o: dict):
    """The engine for a command's options. A command with ``--port`` (``lite serve``) has the
    port checked first, so a port in use is named before a long model load, not after."""
    from litevllm import LLM
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.params.get("port"):
        check_port_free(ctx.params.get("host") or "127.0.0.1", ctx.params["port"])
    kwargs = {}
    for keyword, field, _ in option_fields():
        param = field.metadata.get("param", keyword)
        if field.metadata["cli"] and param in o:
            kwargs[keyword] = not o[param] if field.metadata.get("invert") else o[param]
    return LLM(kwargs.pop("model"), **kwargs)


def check_port_free(host: str, port: int) -> None:
    import socket
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ValueError(f"--host {host}: {e}") from e
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            sock.bind(address)
        except OSError as e:
            raise ValueError(f"port {port} on {host} is not available ({e.strerror}); "
                             f"stop what uses it or pick another with --port") from e


def fail(e: BaseException):
    """One line naming the cause, no stack trace, exit status 1."""
    raise click.ClickException(cli_spelling(str(e).splitlines()[0] if str(e) else type(e).__name__))


_PY_OPTION = re.compile(r"(?<![.\w])([a-z][a-z0-9]*(?:_[a-z0-9]+)*)(?:=(['\"]?)([\w.\-/]+)\2)?")


def cli_spelling(message: str) -> str:
    """Python spellings of the running command's options in ``message`` as the CLI spells
    them: ``load_format='dummy'`` -> ``--load-format dummy``, ``max_model_len`` -> ``--max-model-len``."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return message
    options = {p.name: p for p in ctx.command.params if isinstance(p, click.Option)}

    def respell(m: re.Match) -> str:
        name, value = m.group(1), m.group(3)
        opt = options.get(name)
        if opt is None or (value is None and "_" not in name):
            return m.group(0)  # not an option, or a plain word that may not mean one
        flag = max(opt.opts, key=len)
        if value is None or (opt.is_flag and value == "True"):
            return flag
        return f"{flag} {value}"
    return _PY_OPTION.sub(respell, message)


# commands that plugins of this repository add, for the hint when one is missing
PLUGIN_COMMANDS = {"serve": ("openai", "litevllm-plugin-openai", "plugins/openai")}


def _missing_command(name: str) -> str:
    from litevllm.plugins import get_plugin_manager
    plugin, dist, folder = PLUGIN_COMMANDS[name]
    info = get_plugin_manager().info.get(plugin)
    if info is not None and info.status != "loaded":
        return f"`lite {name}` comes from plugin '{plugin}' ({dist}), which is installed but {info.error}"
    return (f"`lite {name}` comes from the {dist} plugin, which is not installed: "
            f"pip install {dist} (from a checkout: pip install -e {folder})")


class LiteGroup(click.Group):
    """Adds plugin commands on first lookup, so ``lite --help`` stays cheap."""

    def _plugin_commands(self, builtin_only: bool = False, only: str | None = None):
        """Add plugin commands (only the one named ``only``, if given: a broken other command
        is not reported then)."""
        if getattr(self, "_loaded", False):
            return
        from litevllm.plugins import PluginManager, get_plugin_manager
        manager = PluginManager(load_entrypoints=False) if builtin_only else get_plugin_manager()
        self._loaded = not builtin_only and only is None
        for entry in manager.entries["commands"]:
            if only is not None and entry.name != only:
                continue
            if manager._ok(entry.plugin) and entry.name not in self.commands:
                try:
                    self.add_command(entry.load())
                except Exception as e:  # a broken plugin command must not break the CLI
                    logging.getLogger("litevllm").warning("%s", e)

    def get_command(self, ctx, name):
        if name not in self.commands:
            self._plugin_commands(only=name)
        if name not in self.commands and name in PLUGIN_COMMANDS:
            raise click.ClickException(_missing_command(name))
        return super().get_command(ctx, name)

    def list_commands(self, ctx):
        self._plugin_commands(builtin_only=getattr(self, "_formatting_help", False))
        return super().list_commands(ctx)

    def format_help(self, ctx, formatter):
        # help lists built-in commands only, importing no plugin module
        self._formatting_help = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._formatting_help = False


@click.group(cls=LiteGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lite")
@click.option("--config", "config_path", default=None, help="Options file (default ./lite.toml).")
@click.option("-v", "--verbose", is_flag=True)
@click.pass_context
def cli(ctx, config_path, verbose):
    """LitevLLM: fast LLM inference in Python and Triton.

    Commands added by plugins (e.g. `lite serve` from litevllm-plugin-openai) are not listed
    here, so that help imports no plugin code: `lite plugins` shows them.
    """
    # litevllm's own start-up line (device, dtype, kernels, KV-cache size) is shown;
    # other libraries only warn; -v shows everything
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("litevllm").setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        defaults = load_toml_defaults(config_path)
    except ValueError as e:
        fail(e)
    if defaults:
        ctx.default_map = _default_map(ctx, defaults)


def _default_map(ctx, defaults: dict) -> dict:
    """click's default_map from ``lite.toml``: top-level keys apply to every command (plugin
    commands too), a ``[name]`` table to one command, ``[bench.latency]`` to a subcommand.
    Keys no command takes are reported with the closest valid key."""
    group = ctx.command
    common = {k: v for k, v in defaults.items() if not isinstance(v, dict)}
    result, every = {}, set()
    for name in group.list_commands(ctx):
        table = defaults.get(name) if isinstance(defaults.get(name), dict) else {}
        own = {**common, **{k: v for k, v in table.items() if not isinstance(v, dict)}}
        cmd = group.get_command(ctx, name)
        subs = {s: cmd.get_command(ctx, s) for s in cmd.list_commands(ctx)} \
            if isinstance(cmd, click.Group) else {}
        valid = _params(cmd).union(*map(_params, subs.values()))
        every |= valid
        _warn_unknown([k for k, v in table.items() if not isinstance(v, dict) or k not in subs],
                      valid | set(subs), f"[{name}]")
        for sub, sub_cmd in subs.items():
            _warn_unknown(list(table.get(sub, {})), _params(sub_cmd), f"[{name}.{sub}]")
        if subs:
            own.update({sub: {**own, **table.get(sub, {})} for sub in subs})
        result[name] = own
    _warn_unknown([k for k, v in defaults.items() if not isinstance(v, dict) or k not in result],
                  every | set(result), "")
    return result


def _params(cmd) -> set[str]:
    return {p.name for p in cmd.params if p.name}


def _warn_unknown(keys, valid: set[str], where: str) -> None:
    import difflib
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(key.replace("-", "_"), sorted(valid), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            click.echo(f"Warning: lite.toml{' ' + where if where else ''}: unknown key "
                       f"'{key}'{hint}; it is ignored", err=True)


@cli.command()
@engine_options
@click.option("--prompt", "-p", default=None, help="One prompt; omit for an interactive chat.")
@click.option("--max-tokens", type=int, default=256, show_default=True)
@click.option("--temperature", type=float, default=0.7, show_default=True)
@click.option("--top-p", type=float, default=1.0)
@click.option("--top-k", type=int, default=-1)
@click.option("--system", default=None, help="System prompt for chat models.")
@click.option("--no-chat-template", is_flag=True, help="Send the prompt as raw text.")
def run(prompt, max_tokens, temperature, top_p, top_k, system, no_chat_template, **o):
    """Generate from a prompt, streaming tokens to the terminal."""
    from litevllm import SamplingParams
    try:
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
        llm = build_llm(o)
    except Exception as e:
        fail(e)
    use_chat = not no_chat_template and getattr(llm.tokenizer, "chat_template", None)
    history = [{"role": "system", "content": system}] if system else []

    def answer(text: str, pieces: list[str]) -> None:
        """Stream the reply to ``text``, collecting it in ``pieces`` (kept on Ctrl-C)."""
        if use_chat:
            request = {"prompt_token_ids": llm.apply_chat_template(history + [{"role": "user", "content": text}])}
        else:
            request = text
        stream = llm.generate([request], params, stream=True)
        try:
            for out in stream:
                piece = out.outputs[0].delta_text
                pieces.append(piece)
                click.echo(piece, nl=False)
        finally:
            stream.close()  # on Ctrl-C too: the request is aborted, its blocks freed
        click.echo()

    if prompt is not None:
        try:
            answer(prompt, [])
        except ValueError as e:
            fail(e)
        return
    chat_loop(answer, history)


def chat_loop(answer, history: list[dict]) -> None:
    """The interactive chat: Ctrl-C stops a reply and keeps the conversation; Ctrl-C twice at
    the prompt, Ctrl-D or /exit quits; blank lines are ignored."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    click.echo("Interactive chat. Ctrl-C stops a reply; Ctrl-D or /exit quits.", err=True)
    armed = False
    while True:
        try:
            text = input("> ").strip()
        except EOFError:
            click.echo()
            return
        except KeyboardInterrupt:
            if armed:
                click.echo()
                return
            armed = True
            click.echo("\n(Ctrl-C again or Ctrl-D to quit)", err=True)
            continue
        armed = False
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return
        pieces: list[str] = []
        try:
            answer(text, pieces)
        except ValueError as e:
            click.echo(f"Error: {e}", err=True)
            continue
        except KeyboardInterrupt:
            click.echo("\n[reply stopped]", err=True)
        history += [{"role": "user", "content": text}, {"role": "assistant", "content": "".join(pieces)}]


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins(ctx, as_json):
    """List installed plugins and what they register."""
    if ctx.invoked_subcommand is not None:
        return
    from litevllm.plugins import KINDS, get_plugin_manager
    manager = get_plugin_manager()
    report = []
    for info in manager.info.values():
        regs = {k: sorted(e.name for e in manager.entries[k] if e.plugin == info.name) for k in KINDS}
        error = info.error or "; ".join(manager.load_errors(info.name))
        report.append({"name": info.name, "distribution": info.distribution, "version": info.version,
                       "status": info.status, "error": error,
                       "registers": {k: v for k, v in regs.items() if v}})
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for p in report:
        click.echo(f"{p['name']} ({p['distribution']} {p['version']}) [{p['status']}]")
        if p["error"]:
            click.echo(f"  error: {p['error']}")
        for kind, names in p["registers"].items():
            click.echo(f"  {kind}: {', '.join(names)}")
    click.echo(f"quantization schemes: {', '.join(manager.names('quant_methods'))}")


from litevllm.plugin_check import check as _plugins_check  # noqa: E402  (only imports click)
plugins.add_command(_plugins_check)


def main():
    cli(prog_name="lite")


if __name__ == "__main__":
    main()
