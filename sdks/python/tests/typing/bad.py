"""Mistakes the types must catch (each line is expected to be an error)."""

from ezthrottle import EZThrottle, Step


def use(client: EZThrottle) -> None:
    client.submit_job("https://x.example", webhook_url="https://typo.example")  # E: unexpected kwarg
    client.submit_job("https://x.example", retry_policy={"max_retry": 3})  # E: TypedDict key
    client.submit_job("https://x.example", region_policy="nearest")  # E: Literal
    job = client.get_job("job_1")
    job["stat"]  # E: TypedDict key
    job["attempts"][0]["legs"][0]["outcom"]  # E: TypedDict key
    won: int = job["attempts"][0]["legs"][0]["outcome"]  # E: str literal, not int
    Step(client).region_policy("nearest")  # E: Literal
    client.stream.post("https://x.example", jsn={})  # E: unexpected kwarg
    client.submit_job("https://x.example")["state"]  # E: no wait, no job view
    EZThrottle("k", max_retries="2")  # E: int
