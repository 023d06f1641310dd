"""``lite plugins check [NAME]...``: run the conformance kit (``litevllm.testing``) on plugins.

For each plugin: ``check_plugin``; then, for each architecture it registers,
``check_architecture`` on every tiny config from ``conformance_configs`` (the model class's
optional ``tiny_test_config``, else one derived from transformers). Only click is imported at
module level, so ``lite --help`` stays cheap.
"""
from __future__ import annotations

import click


def _architecture_reports(name: str, echo, kernels, requested: bool):
    """Check every architecture plugin ``name`` registers; yields reports as they finish.
    ``requested``: the plugin was named, so an architecture that cannot be checked fails."""
    from litevllm import testing
    from litevllm.plugins import PluginManager
    ep = testing._find_entry_point(name)
    manager = PluginManager()
    for entry in manager.entries["models"]:
        if entry.plugin != ep.name:
            continue
        try:
            model_cls = entry.load()
        except Exception:
            continue  # already reported by check_plugin
        try:
            configs = testing.conformance_configs(entry.name, model_cls)
        except Exception as e:
            report = testing.Report(entry.name)
            report.add("tiny_config", testing.FAIL if requested else testing.SKIP, str(e))
            yield report
            continue
        for i, config in enumerate(configs):
            echo(f"checking {entry.name} against transformers ...")
            report = testing.check_architecture(entry.name, config, kernels=kernels)
            if len(configs) > 1:
                report.subject = f"{entry.name} [config {i + 1}/{len(configs)}]"
            yield report


@click.command("check")
@click.argument("names", nargs=-1)
@click.option("--registrations-only", is_flag=True,
              help="Skip the architecture checks against transformers.")
@click.option("--kernels", "kernels", multiple=True, metavar="NAME",
              help="Kernel provider to check the architectures with (repeatable); one that "
                   "cannot run here fails. Default: every installed one that can run here.")
def check(names, registrations_only, kernels):
    """Check plugins (all installed ones by default).

    Each plugin must load, declare a compatible API version and register valid objects; each
    model architecture it registers must match transformers on tiny random checkpoints
    (greedy tokens, logits, batching, prefix caching, each kernel provider such as Triton).
    Checks that could not run are listed as SKIP with the reason. Exit status 1 on any
    failure, including a check asked for (a named plugin, a --kernels NAME) that cannot run.
    """
    from importlib import metadata

    from litevllm import testing
    requested = bool(names)
    if not names:
        names = sorted({ep.name for ep in metadata.entry_points(group="litevllm")})
    reports = []

    def show(report):
        reports.append(report)
        click.echo(report.table())

    def progress(text):
        click.echo(text, err=True)

    for name in names:
        report = testing.check_plugin(name)
        show(report)
        registered = report.get("registers")
        if not registrations_only and registered and registered.status == testing.PASS:
            for arch_report in _architecture_reports(name, progress, kernels or None,
                                                     requested):
                show(arch_report)
    checks = [c for r in reports for c in r.checks]
    counts = {s: sum(c.status == s for c in checks) for s in (testing.PASS, testing.FAIL,
                                                             testing.SKIP)}
    click.echo(f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
    for line in [line for r in reports for line in r.skip_lines()] + \
            [line for r in reports for line in r.failure_lines()]:
        click.echo(line)
    if counts["FAIL"]:
        raise SystemExit(1)
