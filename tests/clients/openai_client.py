"""Drives a wick gateway with the official openai package, as a user would.

Usage: openai_client.py BASE_URL (for example http://127.0.0.1:8080/v1).
Prints one "... ok" line per call and exits non-zero on the first failure.
"""

import sys

import openai

MODEL = "@cf/microsoft/phi-2"


def main() -> None:
    client = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0, timeout=120)

    models = [model.id for model in client.models.list()]
    assert models, "GET /v1/models lists at least one model"
    print("models ok", models)

    chat = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
    )
    assert chat.choices[0].message.role == "assistant"
    assert isinstance(chat.choices[0].message.content, str)
    assert chat.usage.completion_tokens <= 8
    print("chat ok", chat.choices[0].finish_reason)

    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed == chat.choices[0].message.content, (streamed, chat.choices[0].message.content)
    print("chat stream ok")

    completion = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0)
    assert isinstance(completion.choices[0].text, str)
    print("completion ok", completion.choices[0].finish_reason)

    stream = client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0, stream=True
    )
    streamed = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
    assert streamed == completion.choices[0].text, (streamed, completion.choices[0].text)
    print("completion stream ok")


if __name__ == "__main__":
    main()
