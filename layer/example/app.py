"""The example function: it does nothing interesting; the extension's handler.sh does the logging."""


def handler(event, context):
    print(f"app.py: handling request {context.aws_request_id}")
    return {"ok": True, "requestId": context.aws_request_id}
