"""Drives a wick gateway with the official cloudflare package (Workers AI).

Usage: cloudflare_client.py BASE_URL (for example
http://127.0.0.1:8080/client/v4). Only the base URL changes from a real
Workers AI call. Prints one "... ok" line per call.
"""

import json
import sys

import cloudflare

MODEL = "@cf/microsoft/phi-2"
ACCOUNT = "0123456789abcdef"


def main() -> None:
    client = cloudflare.Cloudflare(base_url=sys.argv[1], api_token="unused", max_retries=0, timeout=120)

    result = client.ai.run(MODEL, account_id=ACCOUNT, prompt="Say hello.", extra_body={"max_tokens": 8})
    assert isinstance(result, dict), result
    assert isinstance(result["response"], str), result
    print("run ok", result.get("usage"))

    text = ""
    done = False
    with client.ai.with_streaming_response.run(
        MODEL, account_id=ACCOUNT, prompt="Say hello.", extra_body={"max_tokens": 8, "stream": True}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                done = True
                continue
            text += json.loads(data).get("response", "")
    assert done, "the stream ends with [DONE]"
    print("run stream ok", repr(text))


if __name__ == "__main__":
    main()
