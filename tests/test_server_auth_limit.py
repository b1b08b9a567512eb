"""Failed token attempts: the limiter on a manual clock, then over real HTTP (an in-process
server on that clock): a guesser is locked out after N, others and token holders are not, the
lock-out ends, X-Forwarded-For counts only when trusted, and page loads are never counted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from streamer.errors import StreamerError
from streamer.server.app import AUTH_LIMITER, Runtime, ServerConfig, create_app
from streamer.server.http.access import AccessConfig
from streamer.server.http.auth_limit import AuthFailureLimiter, FailureLimit
from streamer.server.media.clock import ManualClock
from tests.servers import start_app

TOKEN = "s3cret-token-0123456789abcdef"
WRONG = "wrong-token-0123456789abcdef"


class StepClock:
    """The limiter's clock seam: seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now_s = 500.0

    def now(self) -> float:
        return self.now_s


LIMIT = FailureLimit(max_failures=5, window_s=60.0, lockout_s=30.0, max_addresses=100)


def test_an_address_is_locked_out_at_the_nth_failure_within_the_window() -> None:
    clock = StepClock()
    limiter = AuthFailureLimiter(LIMIT, clock)
    for _ in range(4):
        assert not limiter.record_failure("a")
        clock.now_s += 1
    assert limiter.locked_for_s("a") == 0.0
    assert limiter.record_failure("a")  # the fifth, 4 s after the first
    assert limiter.locked_for_s("a") == 30.0
    assert limiter.locked_for_s("b") == 0.0  # another address is not concerned
    clock.now_s += 29.5
    assert limiter.locked_for_s("a") == pytest.approx(0.5)
    assert not limiter.record_failure("a")  # while locked out: no new lock-out, no extension
    assert limiter.locked_for_s("a") == pytest.approx(0.5)
    clock.now_s += 0.5
    assert limiter.locked_for_s("a") == 0.0  # expired
    # A fresh window after the lock-out: four more failures do not lock it out again.
    for _ in range(4):
        assert not limiter.record_failure("a")
    assert limiter.record_failure("a")


def test_failures_spread_wider_than_the_window_never_lock_out() -> None:
    clock = StepClock()
    limiter = AuthFailureLimiter(LIMIT, clock)
    for _ in range(100):  # one every 15 s: at most 4 within any 60 s
        assert not limiter.record_failure("slow")
        clock.now_s += 15.0
    assert limiter.locked_for_s("slow") == 0.0
    # The window slides: 4 failures 15 s apart, then one just after the first left the window.
    limiter = AuthFailureLimiter(LIMIT, clock)
    for _ in range(4):
        limiter.record_failure("x")
        clock.now_s += 15.0
    assert not limiter.record_failure("x")  # 60 s after the first: it no longer counts
    assert limiter.record_failure("x")


def test_tracked_addresses_are_capped_and_the_oldest_is_forgotten() -> None:
    clock = StepClock()
    limiter = AuthFailureLimiter(FailureLimit(max_failures=2, max_addresses=3), clock)
    limiter.record_failure("old")
    limiter.record_failure("kept")
    limiter.record_failure("b")
    limiter.record_failure("kept")  # locks "kept" out and makes it the newest
    assert limiter.locked_for_s("kept") > 0
    for _ in range(1000):
        limiter.record_failure("b")  # no new address: nothing is forgotten
    assert len(limiter) == 3
    limiter.record_failure("e")  # a fourth address: the one that failed longest ago ("old") goes
    assert len(limiter) == 3
    assert limiter.locked_for_s("kept") > 0
    limiter.record_failure("old")  # counted from scratch: its first failure was forgotten
    assert limiter.locked_for_s("old") == 0.0
    assert limiter.locked_for_s("kept") == 0.0  # now the oldest, forgotten for "old"
    for k in range(10_000):
        limiter.record_failure(f"flood-{k}")
    assert len(limiter) == 3  # bounded, whatever the number of addresses


@pytest.mark.parametrize(
    "bad",
    [
        {"max_failures": 0},
        {"window_s": 0.0},
        {"lockout_s": -1.0},
        {"max_addresses": 0},
    ],
)
def test_nonsense_limits_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(StreamerError):
        FailureLimit(**bad)  # type: ignore[arg-type]


# --- over HTTP -------------------------------------------------------------------------------


class Served:
    def __init__(self, url: str, app: web.Application, clock: ManualClock) -> None:
        self.url, self.app, self.clock = url, app, clock


async def start(runtime: Runtime, access: AccessConfig) -> tuple[web.AppRunner, Served]:
    clock = ManualClock()
    runner, url = await start_app(create_app(ServerConfig(access=access), runtime, clock=clock))
    return runner, Served(url, runner.app, clock)


@pytest.fixture
async def direct(runtime: Runtime) -> AsyncIterator[Served]:
    """A server with a token, counting against the TCP peer (X-Forwarded-For not trusted)."""
    runner, served = await start(runtime, AccessConfig(token=TOKEN, failure_limit=LIMIT))
    yield served
    await runner.cleanup()


@pytest.fixture
async def proxied(runtime: Runtime) -> AsyncIterator[Served]:
    """A server with a token behind a (simulated) proxy: X-Forwarded-For's last hop counts."""
    access = AccessConfig(token=TOKEN, failure_limit=LIMIT, trust_forwarded_for=True)
    runner, served = await start(runtime, access)
    yield served
    await runner.cleanup()


def bearer(token: str | None, forwarded_for: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    return headers


async def status_of(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], method: str = "GET"
) -> int:
    async with http.request(method, url, headers=headers) as r:
        await r.read()
        return r.status


async def test_a_guesser_is_locked_out_after_n_failures_until_it_expires(direct: Served) -> None:
    url = direct.url
    async with aiohttp.ClientSession() as http:
        # Missing and wrong tokens both count; a forged X-Forwarded-For changes nothing here.
        guesses = [None, WRONG, WRONG + "1", WRONG + "2", WRONG + "3"]
        for k, guess in enumerate(guesses):
            headers = bearer(guess, forwarded_for=f"203.0.113.{k}")
            assert await status_of(http, f"{url}/channels", headers) == 401
        for headers, path, method in (
            (bearer(TOKEN), "/channels", "GET"),  # the right token: not even checked
            (bearer(WRONG), "/metrics", "GET"),
            ({}, "/offer", "POST"),
            (bearer(WRONG), "/health", "GET"),  # a presented token is checked, so refused
        ):
            async with http.request(method, f"{url}{path}", headers=headers) as r:
                body = await r.json()
                assert (r.status, body["error"]) == (429, "too_many_failures"), (path, body)
                assert body["message"]
                assert r.headers["Retry-After"] == "30"
        # What checks no token still works: the pages, liveness for load balancers.
        assert await status_of(http, f"{url}/", {}) == 200
        async with http.get(f"{url}/health") as r:
            assert (r.status, await r.json()) == (200, {"status": "ok"})
        await direct.clock.advance(20.0)
        async with http.get(f"{url}/channels", headers=bearer(TOKEN)) as r:
            assert r.status == 429
            assert r.headers["Retry-After"] == "10"
        await direct.clock.advance(10.0)
        # Expired: the token works again, and a wrong one is a 401 again (a fresh window).
        assert await status_of(http, f"{url}/channels", bearer(TOKEN)) == 200
        for _ in range(LIMIT.max_failures - 1):
            assert await status_of(http, f"{url}/channels", bearer(WRONG)) == 401
        assert await status_of(http, f"{url}/channels", bearer(TOKEN)) == 200


async def test_behind_a_proxy_each_forwarded_address_is_counted_apart(proxied: Served) -> None:
    url = proxied.url
    guesser, other, holder = "198.51.100.7", "198.51.100.8", "198.51.100.9"
    async with aiohttp.ClientSession() as http:
        for _ in range(LIMIT.max_failures):
            assert await status_of(http, f"{url}/channels", bearer(WRONG, guesser)) == 401
        assert await status_of(http, f"{url}/channels", bearer(TOKEN, guesser)) == 429
        # Another client of the same proxy: its own count.
        assert await status_of(http, f"{url}/channels", bearer(WRONG, other)) == 401
        assert await status_of(http, f"{url}/channels", bearer(TOKEN, other)) == 200
        # A token holder is never counted nor slowed, however many requests it makes.
        for _ in range(4 * LIMIT.max_failures):
            assert await status_of(http, f"{url}/channels", bearer(TOKEN, holder)) == 200
        # Only the last hop (the one the proxy appended) counts: what the client wrote before
        # it cannot put it in another address's place, nor get it out of its own lock-out.
        forged = f"{guesser}, {holder}"
        assert await status_of(http, f"{url}/channels", bearer(TOKEN, forged)) == 200
        forged = f"{holder}, {guesser}"
        assert await status_of(http, f"{url}/channels", bearer(TOKEN, forged)) == 429
        # Two header lines (some proxies add their own): still the last hop.
        async with http.get(
            f"{url}/channels",
            headers=[
                ("Authorization", f"Bearer {TOKEN}"),
                ("X-Forwarded-For", holder),
                ("X-Forwarded-For", guesser),
            ],
        ) as r:
            assert r.status == 429
    assert len(proxied.app[AUTH_LIMITER]) == 2  # the guesser and the other; not the holder


PAGE_LOAD = [  # what the call page asks for, in order
    ("GET", "/"),
    ("GET", "/static/call.js"),
    ("GET", "/ice-servers"),
    ("GET", "/health"),
    ("GET", "/openapi.json"),
]


async def test_page_loads_are_never_counted(runtime: Runtime, direct: Served) -> None:
    # No token configured (a loopback server): nothing is ever counted.
    runner, open_server = await start(runtime, AccessConfig(failure_limit=LIMIT))
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(3 * LIMIT.max_failures):
                for method, path in PAGE_LOAD:
                    status = await status_of(http, f"{open_server.url}{path}", {}, method)
                    assert status == 200, path
        assert len(open_server.app[AUTH_LIMITER]) == 0
    finally:
        await runner.cleanup()
    # With a token: the page with its token, and the public parts without one, never count.
    async with aiohttp.ClientSession() as http:
        for _ in range(3 * LIMIT.max_failures):
            for method, path in PAGE_LOAD:
                assert await status_of(http, f"{direct.url}{path}", bearer(TOKEN), method) == 200
            for path in ("/", "/static/call.js", "/health", "/openapi.json", "/view/x"):
                assert await status_of(http, f"{direct.url}{path}", {}) == 200
    assert len(direct.app[AUTH_LIMITER]) == 0
