"""Rate limits, failure counting and bans, in the core without sockets."""
from registrar.sip.core import BanSource, RecordAttempt, SendMessage, Source
from registrar.sip.policy import Policy
from registrar.sip.protection import Guard
from registrar.sip.reasons import Reason
from tests.test_core import NOW, Harness, answer, challenges, register

ATTACKER = Source("udp", "203.0.113.66", 5060)


def guessing(harness, guesses, source=ATTACKER, user="1001", start=NOW, step=0.01):
    """Send ``guesses`` wrong-password flows; the actions of the last one."""
    for index in range(guesses):
        now = start + index * step
        (first, _), = harness.send(register(user=user, call_id=f"g{user}-{start}-{index}"), source=source, now=now)
        actions = harness.core.receive(
            register(user=user, call_id=f"g{user}-{start}-{index}", cseq=2,
                     authorization=answer(challenges(first)[0], user, f"guess{index}")).encode(), source, now)
    return actions


def test_a_dictionary_attack_is_banned_after_the_per_extension_threshold():
    harness = Harness(policy=Policy(ban_per_extension=10, ban_per_source=30))
    actions = guessing(harness, 10)
    bans = [a.ban for a in actions if isinstance(a, BanSource)]
    assert len(bans) == 1 and bans[0].ip == ATTACKER.ip and bans[0].until == NOW + 9 * 0.01 + 3600
    assert "extension 1001" in bans[0].detail
    # From now on the source is dropped without an answer, before parsing.
    assert harness.core.receive(register().encode(), ATTACKER, NOW + 1) == []


def test_guessing_many_extensions_is_banned_by_the_per_source_threshold():
    harness = Harness(policy=Policy(ban_per_extension=10, ban_per_source=5))
    for index in range(4):
        assert not any(isinstance(a, BanSource) for a in guessing(harness, 1, user=f"20{index}"))
    actions = guessing(harness, 1, user="2999")
    assert any(isinstance(a, BanSource) for a in actions)


def test_a_mistyped_password_retrying_slowly_never_bans_the_office():
    harness = Harness(policy=Policy(ban_per_extension=10, ban_window=60))
    actions = guessing(harness, 50, source=Source("udp", "198.51.100.1", 5060), step=30)
    assert not any(isinstance(a, BanSource) for a in actions)
    assert [type(a) for a in actions] == [RecordAttempt, SendMessage]


def test_stale_nonces_and_expiry_trouble_do_not_count():
    guard = Guard()
    guard.configure(per_source=1, per_extension=1)
    assert guard.note_failure("192.0.2.1", "1001", Reason.STALE_NONCE, NOW) is None
    assert guard.note_failure("192.0.2.1", "1001", Reason.INTERVAL_TOO_BRIEF, NOW) is None
    assert guard.note_failure("192.0.2.1", "1001", Reason.WRONG_PASSWORD, NOW) is not None


def test_the_allow_list_and_our_own_addresses_are_never_banned():
    guard = Guard(own_addresses={"192.0.2.53"})
    guard.configure(per_source=1, allowed_networks=("10.0.0.0/8",))
    assert guard.note_failure("10.1.2.3", "1001", Reason.WRONG_PASSWORD, NOW) is None
    assert guard.note_failure("192.0.2.53", "1001", Reason.WRONG_PASSWORD, NOW) is None
    assert guard.note_failure("192.0.2.54", "1001", Reason.WRONG_PASSWORD, NOW) is not None


def test_a_lifted_ban_is_forgotten_with_its_failures():
    harness = Harness(policy=Policy(ban_per_extension=3))
    guessing(harness, 3)
    assert harness.core.guard.is_banned(ATTACKER.ip, NOW + 1)
    harness.core.set_bans({})
    assert not harness.core.guard.is_banned(ATTACKER.ip, NOW + 1)
    actions = guessing(harness, 1, start=NOW + 2)
    assert not any(isinstance(a, BanSource) for a in actions)


def test_a_ban_ends_by_itself():
    guard = Guard()
    guard.set_bans({"192.0.2.9": NOW + 10})
    assert guard.is_banned("192.0.2.9", NOW + 9) and not guard.is_banned("192.0.2.9", NOW + 11)


def test_the_rate_limit_drops_the_excess_and_refills():
    guard = Guard()
    guard.configure(rate=10, burst=20)
    admitted = sum(guard.admit("192.0.2.7", NOW) for _ in range(100))
    assert admitted == 20
    assert guard.admit("192.0.2.7", NOW + 0.15)  # a token back after 100 ms
    assert guard.admit("192.0.2.8", NOW)  # other sources are not affected


def test_the_tables_stay_bounded_under_spoofed_sources():
    guard = Guard(max_sources=1000)
    guard.configure(rate=10, burst=10, per_source=100, per_extension=100)
    for index in range(5000):
        ip = f"10.{index // 65536}.{index // 256 % 256}.{index % 256}"
        guard.admit(ip, NOW)
        guard.note_failure(ip, "1001", Reason.UNKNOWN_USER, NOW)
    assert len(guard._buckets) <= 1000 and len(guard._source_failures) <= 1000


def test_scanners_get_403_to_register_and_silence_otherwise():
    harness = Harness()
    scanner = register().replace("User-Agent: TestPhone/1.0", "User-Agent: friendly-scanner")
    (response, _), = harness.send(scanner)
    assert response.status == 403 and not challenges(response)
    assert harness.attempts[-1].reason == Reason.UA_POLICY
    options = scanner.replace("REGISTER sip", "OPTIONS sip").replace("1 REGISTER", "1 OPTIONS")
    assert harness.send(options) == []


def test_enumerating_a_hundred_extensions_by_register_invite_and_options_finds_none():
    """Half the numbers exist; nothing in the answers tells which."""
    from registrar.sip.core import Credentials
    from tests.test_core import ha1s

    extensions = {str(2000 + i): Credentials(str(2000 + i), True, ha1s(str(2000 + i), "pw"), 3)
                  for i in range(0, 100, 2)}
    harness = Harness(extensions=extensions, policy=Policy(ban_per_source=0, ban_per_extension=0))
    scanner = Source("udp", "198.51.100.99", 5060)

    def shape(response):
        values = {name: value for name, value in response.headers.items()}
        return (response.status, response.reason, [name for name, _ in response.headers.items()],
                [v.split("nonce=")[0] for v in response.headers.get_all("WWW-Authenticate")],
                values.get("Allow"))

    for method in ("REGISTER", "INVITE", "OPTIONS"):
        shapes = set()
        for index in range(100):
            number = str(2000 + index)
            request = register(user=number, call_id=f"enum-{method}-{number}").replace(
                "REGISTER sip", f"{method} sip").replace("1 REGISTER", f"1 {method}")
            (response, _), = harness.send(request, source=scanner)
            first = shape(response)
            if method == "REGISTER":
                # Answer the challenge with a guess, as an enumerator would.
                (response, _), = harness.send(register(user=number, call_id=f"enum-{method}-{number}", cseq=2,
                                                       authorization=answer(challenges(response)[0], number, "x")),
                                              source=scanner)
                first = (first, shape(response))
            shapes.add(repr(first))
        assert len(shapes) == 1, (method, shapes)
