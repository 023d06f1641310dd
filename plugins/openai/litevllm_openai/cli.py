"""The ``lite serve`` command."""
import click

from litevllm.plugin_api import build_llm, engine_options, fail


@click.command("serve")
@engine_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--served-model-name", default=None,
              help="Model name clients send (default: the --model argument).")
def serve(host, port, served_model_name, **options):
    """Serve the model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions)."""
    from litevllm_openai.server import OpenAIServer
    try:
        llm = build_llm(options)
        server = OpenAIServer(llm, served_model_name or options["model"], host, port)
    except Exception as e:
        fail(e)
    click.echo(f"serving '{server.model_name}' on http://{host}:{server.port}/v1 (Ctrl-C to stop)",
               err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
