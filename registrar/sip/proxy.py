"""Extension-to-extension calls: Regis as a stateful proxy (RFC 3261 §16), sans-IO.

:class:`Proxy` owns every decision about a call's signalling once the core has handed it
an INVITE, an ACK, a CANCEL or a request routed through us: Max-Forwards (483) and loop
detection (482), the caller's 407 digest challenge (through the core's authentication,
recorded like REGISTER's), the callee's extension (404 unknown, 480 nobody registered),
forking to every live binding (higher q first, all in parallel), our Via and
Record-Route, the response context (§16.7: provisionals forwarded, the first 2xx wins and
the other branches are cancelled, otherwise the best final response), CANCEL from the
caller (§16.10) and loose routing of in-dialog requests (§16.4, §16.12).

The bindings are the database's: the proxy hands back :class:`LookupCallee` and goes on
in :meth:`Proxy.callee_found` with :class:`CallTarget` values whose ``destination`` the
adapter built — a phone is reached at the source address of its REGISTER, never at the
host of its Contact (behind NAT only the former leads back). In-dialog requests go to the
Contacts that calls through us taught it (callers where their INVITE came from, callees
where their bindings are); any other Request-URI is looked up as a binding's Contact
(:class:`LookupContact`, then :meth:`Proxy.contact_found`), and what is neither gets 404:
a crafted Route or Request-URI never makes Regis relay to an address of its choosing.

Media never passes through here. A websocket phone is reached through the tunnel the web
process holds open to runsip for its websocket (registrar.worker.tunnel); a target the
adapter has no destination for is left out, so a callee reachable nowhere gets 480.
"""
import dataclasses
import hashlib
import heapq
import itertools
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from registrar.sip import client
from registrar.sip.errors import SipError
from registrar.sip.invite import InviteClient, InviteServer
from registrar.sip.message import Request, Response
from registrar.sip.reasons import Reason
from registrar.sip.transactions import MAGIC_COOKIE, transaction_key
from registrar.sip.uac import answer_challenge, parse_challenges
from registrar.sip.uri import parse_name_addr, parse_uri

BRANCH_PREFIX = MAGIC_COOKIE + "regis"
MAX_REMEMBERED_CONTACTS = 10_000
MAX_TRUNK_DIALOGS = 10_000
# A trunk that calls every answer stale would be answered for ever.
MAX_STALE_ANSWERS = 2
# How long a call may wait for the database to say where it goes (Timer B's 32 s).
LOOKUP_TIMEOUT = 32.0
# Identities a phone may assert only about itself (RFC 3325): what we forward is ours to say.
IDENTITY_HEADERS = frozenset({"p-asserted-identity", "p-preferred-identity", "remote-party-id"})
UNREACHABLE_TRANSPORTS = frozenset()


@dataclass(frozen=True)
class LookupCallee:
    """Decide where the authenticated ``caller``'s call to ``user`` (the number dialled) goes —
    an extension's bindings, a trunk, or a refusal — and record the call; answer with
    :meth:`Proxy.callee_found` and a :class:`CallRoute`."""

    ticket: int
    user: str
    caller: str = ""
    call_id: str = ""
    caller_tag: str = ""
    source: object = None


@dataclass(frozen=True)
class LookupContact:
    """Find the live binding whose Contact is ``contact_uri`` (an in-dialog request to a phone
    no call in this process taught us); answer with :meth:`Proxy.contact_found`."""

    ticket: int
    contact_uri: str


@dataclass(frozen=True)
class CallProgress:
    """Something happened to a call (for its record): ``state`` is "ringing", "answered"
    or "ended". ``tags`` are the From tag (and To tag, for in-dialog requests) of the
    message that told us: the call is the one whose caller tag is among them. For a BYE,
    ``bye_from_tag`` is its From tag (caller's: the caller hung up; else the callee)."""

    call_id: str
    tags: tuple
    state: str
    at: float
    status: int | None = None
    reason: str = ""
    bye_from_tag: str | None = None


@dataclass(frozen=True)
class CallTarget:
    contact_uri: str
    destination: object  # a core.Source the adapter can send on; None when unreachable
    q: float = 1.0
    transport: str = "udp"
    path: tuple = ()  # the binding's Path (RFC 3327): Route values towards it


@dataclass(frozen=True)
class TrunkLeg:
    """A call out through a trunk: where to send it, as whom, and the credentials that
    answer the trunk's 401/407 (the caller never knows them, like Kamailio's uac_auth)."""

    name: str
    request_uri: str  # sip:<number as the trunk wants it>@<trunk host>
    from_uri: str  # the trunk's address of record: the From the upstream expects
    destination: object  # a core.Source
    username: str
    password: str
    expected_realm: str = ""
    route: str = ""  # a Route value when an outbound proxy stands before the trunk


@dataclass(frozen=True)
class CallRoute:
    """Where a call goes: the callee's bindings, a trunk, or a refusal (status, phrase, why)."""

    targets: tuple = ()
    trunk: TrunkLeg | None = None
    refusal: tuple | None = None


@dataclass
class _Branch:
    call: "_Call"
    client: InviteClient
    request: Request  # the INVITE as sent on this branch
    cancel_wanted: bool = False
    cancelled: bool = False
    trunk: TrunkLeg | None = None
    # Trunk legs: the challenges answered so far by the header answering them (each sent
    # again with the next INVITE, RFC 3261 §22.3), and how far our CSeq runs ahead of the caller's.
    challenges: dict = None
    nonce_counts: dict = None
    cseq_offset: int = 0
    stale_answers: int = 0


@dataclass
class _Call:
    """The response context of one INVITE (§16.2)."""

    request: Request
    source: object
    server: InviteServer
    caller: str
    ticket: int = 0
    branches: list = None
    best: Response = None
    answered: bool = False
    finished: bool = False
    recorded: bool = False  # the adapter stored it: progress reports go out
    rang: bool = False
    failure: str = ""  # why it failed, in words, when we know better than the status


@dataclass(frozen=True)
class _TrunkDialog:
    """A call answered through a trunk: the caller and the trunk know it by different
    From/To addresses and CSeq numbers (we sent the INVITE as the trunk's identity, again
    after a challenge). In-dialog requests are translated both ways (§12.2.1.1)."""

    shift: int  # how much higher our CSeq to the trunk runs than the caller's
    caller_from: str  # the caller's From, tag included
    caller_to: str  # the caller's To, without tag
    trunk_from: str  # the From the trunk saw, tag included
    trunk_to: str  # the To the trunk saw, without tag
    trunk: TrunkLeg = None  # whose credentials answer the trunk's challenges inside the dialog


@dataclass
class _Forwarded:
    """A non-INVITE request routed through us, waiting for its answer."""

    request: Request
    source: object
    key: tuple
    branch: str
    data: bytes = b""  # as sent on
    destination: object = None
    challenged: bool = False  # already sent again with a trunk's credentials


class Proxy:
    def __init__(self, core, *, secret: bytes, t1: float = client.T1):
        self.core = core
        self.t1 = t1
        self._key = hashlib.sha256(b"proxy-branch" + secret).digest()[:32]
        self._locals = []  # (transport, host, port) we listen on, as others must address us
        self._servers: dict = {}  # INVITE transaction key -> _Call
        self._branches: dict = {}  # our branch -> _Branch
        self._waiting: dict = {}  # ticket -> _Call (callee lookup in the database)
        self._seeking: dict = {}  # ticket -> how to go on once a contact's binding is read
        self._forwarded = client.ClientTransactions(t1=t1, timer_f=64 * t1)
        self._contacts: OrderedDict = OrderedDict()  # contact URI key -> Source seen for it
        # (Call-ID, caller's tag) -> _TrunkDialog of calls answered through a trunk.
        self._trunk_dialogs: OrderedDict = OrderedDict()
        # Contacts and proxies of trunks: reached only by requests of a trunk dialog, so nobody
        # can use Regis to reach a carrier that trusts its address.
        self._trunk_contacts: OrderedDict = OrderedDict()
        # INVITEs waiting for the authorization server (bearer callers), by transaction key.
        self._parked: OrderedDict = OrderedDict()
        # Branches Timer C cancelled and forgot: their 487 still gets its ACK (§17.1.1.3).
        self._late_acks: OrderedDict = OrderedDict()
        self._timers: list = []
        self._lookups: list = []  # (deadline, ticket) of calls waiting for the database
        self._order = itertools.count()

    # -- configuration ---------------------------------------------------------------
    def set_listeners(self, listeners) -> None:
        """Where we listen, as ``(transport, host, port)``; the host is the one others use."""
        self._locals = [(transport.lower(), host.lower().strip("[]"), int(port)) for transport, host, port in listeners]

    def _local(self, transport: str):
        for local in self._locals:
            if local[0] == transport:
                return local
        return self._locals[0] if self._locals else (transport, "127.0.0.1", 5060)

    def _is_us(self, uri) -> bool:
        host = uri.host.strip("[]")
        port = uri.port or (5061 if uri.scheme == "sips" else 5060)
        return any(host == local_host and port == local_port for _, local_host, local_port in self._locals)

    # -- requests from the core's dispatch -------------------------------------------------
    def routes_through_us(self, request: Request) -> bool:
        """Whether the top Route names us (a request of a dialog we record-routed)."""
        routes = request.headers.get_all("Route")
        if not routes:
            return False
        try:
            return self._is_us(parse_name_addr(routes[0]).uri)
        except SipError:
            return False

    def invite(self, request: Request, source, now: float) -> list:
        key = transaction_key(request)
        known = self._servers.get(key)
        if known is not None:
            return self._send(known.server.retransmitted())
        if key in self._parked and self._parked[key] is not request:
            return []  # a retransmission while the authorization server is asked: it is on its way
        destination = _response_destination(request, source)
        call = _Call(request, source, InviteServer(key, destination, source.reliable, self.t1), "", branches=[])
        self._servers[key] = call
        try:
            return self._invite(call, key, request, source, now)
        except SipError as error:
            # A header only read now was malformed: the transaction still ends (Timer H).
            return self._final_local(call, error.status or 400, error.reason or "Bad Request", now=now)

    def _invite(self, call: _Call, key, request: Request, source, now: float) -> list:
        refusal = self._validate(request)
        if refusal is not None:
            return self._final_local(call, *refusal, now=now)
        if request.to.tag is not None:
            # A re-INVITE: the dialog's route set says where.
            return self._send(call.server.send(self._local_response(request, source, 100, "Trying"), 100, now)) + \
                self._route_onwards(call, request, now)
        credentials, username, refusal = self.core._authenticate(key, request, source, now, proxy=True)
        if refusal is not None:
            adopted = self._adopt_final(call, refusal, now)
            if not call.finished:
                # Parked while the authorization server is asked: the INVITE comes back
                # through here once it answers, and must not look like a retransmission.
                self._servers.pop(key, None)
                _bounded_put(self._parked, key, request, MAX_REMEMBERED_CONTACTS)
            return adopted
        self._parked.pop(key, None)
        from_user = request.from_.uri.user_unescaped or ""
        if from_user != username:
            attempt = self.core._attempt(request, source, now, "rejected", Reason.AUTH_USER_MISMATCH, 403,
                                         username, f"authenticated as {username!r}, calling as {from_user!r}")
            return [*self.core._recorded(attempt), *self._final_local(call, 403, "Forbidden", now=now)]
        call.caller = username
        callee = request.uri.user_unescaped or ""
        if not callee:
            return self._final_local(call, 404, "Not Found", now=now)
        self._remember_contact(request, source)
        call.ticket = next(self.core._tickets)
        self._waiting[call.ticket] = call
        heapq.heappush(self._lookups, (now + LOOKUP_TIMEOUT, call.ticket))
        trying = call.server.send(self._local_response(request, source, 100, "Trying"), 100, now)
        # Extension, dial plan, emergency number or refusal: the database decides (and records the call).
        return [*self._send(trying), LookupCallee(call.ticket, callee, username, request.call_id,
                                                  request.from_.tag or "", source)]

    def callee_found(self, ticket: int, route, now: float) -> list:
        """Where the call goes: a :class:`CallRoute` (a plain list of :class:`CallTarget` is
        an extension's bindings)."""
        call = self._waiting.pop(ticket, None)
        if call is None or call.finished:
            return []
        try:
            return self._route_call(call, route, now)
        except Exception as error:  # whatever went wrong, the caller gets a final answer and the record ends
            call.recorded = True
            actions = self._cancel_branches(call, now) if call.branches else []
            return actions + self._final_local(call, 500, "Server Internal Error", now=now,
                                               why=f"routing failed: {error}")

    def _route_call(self, call: _Call, route, now: float) -> list:
        if not isinstance(route, CallRoute):
            route = CallRoute(targets=tuple(route))
        if route.refusal is not None:
            status, phrase, _ = route.refusal
            return self._final_local(call, status, phrase, now=now)
        call.recorded = True
        if route.trunk is not None:
            return self._fork_to_trunk(call, route.trunk, now)
        usable = [t for t in route.targets if t.destination is not None and t.transport not in UNREACHABLE_TRANSPORTS]
        if not usable:
            return self._final_local(call, 480, "Temporarily Unavailable", now=now,
                                     why="no registered phone of the callee can be reached from runsip")
        usable.sort(key=lambda target: -(target.q if target.q is not None else 1.0))
        actions = []
        for index, target in enumerate(usable):
            try:
                uri = parse_uri(target.contact_uri)
            except SipError:
                continue
            self._contacts_put(_uri_key(uri), target.destination)
            actions += self._fork(call, call.request, str(uri), target.destination, index, now, record_route=True,
                                  routes=[*target.path, *self._routes_after_us(call.request)])
        if not call.branches:
            return self._final_local(call, 480, "Temporarily Unavailable", now=now)
        return actions

    def _fork_to_trunk(self, call: _Call, trunk: TrunkLeg, now: float) -> list:
        routes = [trunk.route] if trunk.route else []
        # As the trunk's identity to the number as the trunk wants it: the upstream knows
        # neither our extensions nor our domain.
        from_value = str(dataclasses.replace(call.request.from_, uri=parse_uri(trunk.from_uri)))
        to_value = f"<{trunk.request_uri}>"
        return self._fork(call, call.request, trunk.request_uri, trunk.destination, 0, now, record_route=True,
                          routes=routes, trunk=trunk, from_value=from_value, to_value=to_value)

    def contact_found(self, ticket: int, target, now: float) -> list:
        """The binding (a :class:`CallTarget`, or None) whose Contact an in-dialog request named."""
        resume = self._seeking.pop(ticket, None)
        if resume is None:
            return []
        if target is not None and target.destination is not None:
            try:
                self._contacts_put(_uri_key(parse_uri(target.contact_uri)), target.destination)
            except SipError:
                pass
        return resume(now)

    def _seek(self, request: Request, resume, now: float) -> list:
        if self._routes_after_us(request):
            return resume(now)  # another proxy is next: not a binding of ours
        ticket = next(self.core._tickets)
        self._seeking[ticket] = resume
        return [LookupContact(ticket, str(request.uri))]

    def callee_lookup_failed(self, ticket: int, now: float) -> list:
        call = self._waiting.pop(ticket, None)
        if call is None:
            return []
        return self._final_local(call, 500, "Server Internal Error", (("Retry-After", "5"),), now=now,
                                 why="the database did not answer in time")

    def ack(self, request: Request, source, now: float, looked_up: bool = False) -> list:
        try:
            key = transaction_key(request)
        except SipError:
            return []
        call = self._servers.get(key[:-1] + ("INVITE",))
        if call is not None and call.server.acknowledged():
            if call.server.terminated:
                self._servers.pop(call.server.key, None)
            return []  # the ACK of a non-2xx final: hop by hop, ours
        if not self.routes_through_us(request):
            return []
        # The ACK of a 2xx is end to end: forwarded statelessly (§16.11 allows it for ACK).
        try:
            if self._validate(request) is not None:
                return []
            data, destination = self._forward_in_dialog(request, source, branch=self._stateless_branch(request))
        except SipError:
            return []
        if destination is None:
            return [] if looked_up else self._seek(request, lambda at: self.ack(request, source, at, True), now)
        return [self.core._send_action(data, destination)]

    def cancel(self, request: Request, source, key, now: float) -> list:
        """CANCEL from the caller (§16.10): 200 for it, CANCEL down every branch, 487 up."""
        invite_key = key[:-1] + ("INVITE",)
        call = self._servers.get(invite_key)
        parked = self._parked.pop(invite_key, None)
        if call is None and parked is not None:
            # Cancelled while its token is checked: 487 now; its replay finds this answer.
            destination = _response_destination(parked, source)
            call = _Call(parked, source, InviteServer(invite_key, destination, source.reliable, self.t1), "",
                         branches=[])
            self._servers[invite_key] = call
            return [*self.core._finish(key, request, source, now, 200, "OK"),
                    *self._final_local(call, 487, "Request Terminated", now=now)]
        if call is None:
            return self.core._finish(key, request, source, now, 481, "Call/Transaction Does Not Exist")
        actions = self.core._finish(key, request, source, now, 200, "OK")
        if call.finished or call.answered:
            return actions
        if self._waiting.pop(call.ticket, None) is not None:
            call.recorded = True  # the adapter is storing it right now: its record must end too
        actions += self._cancel_branches(call, now)
        actions += self._final_local(call, 487, "Request Terminated", now=now, why="cancelled by the caller")
        return actions

    def in_dialog(self, request: Request, source, key, now: float, looked_up: bool = False) -> list:
        """A non-INVITE request whose top Route is ours (BYE, INFO, UPDATE...): forwarded in
        a client transaction of our own; its answer completes the core's server transaction."""
        refusal = self._validate(request)
        if refusal is not None:
            return self.core._finish(key, request, source, now, *refusal)
        branch = self._stateless_branch(request)
        try:
            data, destination = self._forward_in_dialog(request, source, branch=branch)
        except SipError as error:
            return self.core._finish(key, request, source, now, error.status or 400, error.reason)
        if destination is None and not looked_up:
            return self._seek(request, lambda at: self.in_dialog(request, source, key, at, True), now)
        if destination is None:
            return self.core._finish(key, request, source, now, 404, "Not Found")
        context = _Forwarded(request, source, key, branch, data, destination)
        first = self._forwarded.start(branch=branch, method=request.method, data=data, destination=destination,
                                      context=context, now=now, reliable=destination.reliable)
        actions = [self.core._send_action(first.data, first.destination)]
        if request.method == "BYE":
            from_tag = request.from_.tag or ""
            actions.append(CallProgress(request.call_id, (from_tag, request.to.tag or ""), "ended", now,
                                        bye_from_tag=from_tag))
        return actions

    # -- responses from the callees ---------------------------------------------------------
    def owns(self, response: Response) -> bool:
        try:
            branch = response.top_via.branch or ""
        except SipError:
            return False
        return branch.startswith(BRANCH_PREFIX)

    def response(self, response: Response, source, now: float) -> list:
        branch_id = response.top_via.branch
        if response.cseq[1] != "INVITE":
            answered = self._forwarded.response(response, now)
            if answered is None or not isinstance(answered.context, _Forwarded):
                return []  # provisional, a retransmission, or the answer to one of our CANCELs
            if response.status in (401, 407):
                again = self._answer_in_dialog_challenge(answered.context, response, now)
                if again:
                    return again
            return self._forward_answer(answered.context, response, now)
        branch = self._branches.get(branch_id)
        if branch is None:
            late = self._late_acks.pop(branch_id, None) if response.status >= 300 else None
            if late is not None:
                invite, destination = late
                return [self.core._send_action(_ack_for(invite, response), destination)]
            return []
        call = branch.call
        status = response.status
        if status > 100 and status < 300:
            self._learn_neighbours(response, branch)
        if status < 200:
            branch.client.provisional(now)
            self._schedule(branch.client)
            actions = []
            if branch.cancel_wanted and not branch.cancelled:
                actions += self._cancel_branch(branch, now)
            elif status > 100 and not call.finished:
                actions += self._send(call.server.send(self._upstream(response, branch, call.request), status, now))
                if status in (180, 183) and not call.rang:
                    call.rang = True
                    actions += self._progress(call, "ringing", now, status)
            return actions
        ack = None if status < 300 else _ack_for(branch.request, response)
        fresh, sends = branch.client.final(status, ack, now)
        actions = self._send(sends)
        self._schedule(branch.client)
        if 200 <= status < 300:
            # Every 2xx goes up, retransmissions included (§16.7 step 5): the caller's ACK ends them.
            self._remember_contact(response, source, trunk=branch.trunk is not None)
            data = self._upstream(response, branch, call.request)
            if not call.answered:
                call.answered = True
                call.finished = True
                actions += self._progress(call, "answered", now, status)
                if branch.trunk is not None:
                    self._remember_trunk_dialog(branch)
                sends = call.server.send(data, status, now)
                self._schedule(call.server)
                # Even after a CANCEL's 487 a 2xx goes up (§16.7 step 5): the caller ACKs and hangs up.
                actions += self._send(sends) if sends else [self.core._send_action(data, call.server.destination)]
                actions += self._cancel_branches(call, now)
            else:
                actions.append(self.core._send_action(data, call.server.destination))
            return actions
        if not fresh:
            return actions
        if call.finished:
            return actions
        if status in (401, 407) and branch.trunk is not None:
            return actions + self._answer_trunk_challenge(branch, response, now)
        if status >= 600:
            call.best = response
            actions += self._cancel_branches(call, now)
            return actions + self._final_best(call, now)
        if call.best is None or _rank(status) < _rank(call.best.status):
            call.best = response
        if not any(b.client.pending for b in call.branches):
            actions += self._final_best(call, now)
        return actions

    # -- timers --------------------------------------------------------------------------
    def next_deadline(self):
        while self._timers and self._timers[0][2].due != self._timers[0][0]:
            heapq.heappop(self._timers)
        while self._lookups and self._lookups[0][1] not in self._waiting:
            heapq.heappop(self._lookups)
        deadlines = [d for d in (self._timers[0][0] if self._timers else None, self._forwarded.next_deadline(),
                                 self._lookups[0][0] if self._lookups else None) if d is not None]
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> list:
        actions = []
        while self._lookups and self._lookups[0][0] <= now:
            _, ticket = heapq.heappop(self._lookups)
            if ticket in self._waiting:
                # The database never answered: the caller is told to try again, not left ringing.
                call = self._waiting[ticket]
                call.recorded = True
                actions += self.callee_lookup_failed(ticket, now)
        while self._timers and self._timers[0][0] <= now:
            due, _, machine = heapq.heappop(self._timers)
            if machine.due != due:
                continue
            actions += self._send(machine.fire(now))
            self._schedule(machine)
            if isinstance(machine, InviteClient):
                actions += self._client_timer(machine, now)
            elif machine.terminated:
                self._servers.pop(machine.key, None)
        for item in self._forwarded.tick(now):
            if isinstance(item, client.Resend):
                actions.append(self.core._send_action(item.data, item.destination))
            elif isinstance(item.context, _Forwarded):
                forwarded = item.context
                actions += self.core._finish(forwarded.key, forwarded.request, forwarded.source, now,
                                             408, "Request Timeout")
        return actions

    def _client_timer(self, machine: InviteClient, now: float) -> list:
        branch = self._branches.get(machine.branch)
        if branch is None:
            return []
        if not machine.terminated:
            return []
        del self._branches[machine.branch]
        call = branch.call
        actions = []
        if machine.timed_out and machine.was_proceeding and not branch.cancelled:
            actions += self._cancel_branch(branch, now)  # Timer C: ringing too long
            _bounded_put(self._late_acks, machine.branch, (branch.request, branch.client.destination),
                         MAX_REMEMBERED_CONTACTS)
        if not machine.timed_out or call.finished:
            return actions
        # Timer B: this branch counts as a 408 (§16.7 step 2 "as if a 408 had arrived").
        if call.best is None:
            call.best = Response(408, "Request Timeout")
        if not any(b.client.pending for b in call.branches):
            return actions + self._final_best(call, now)
        return actions

    def _schedule(self, machine) -> None:
        if machine.due is not None:
            heapq.heappush(self._timers, (machine.due, next(self._order), machine))

    # -- building and sending ---------------------------------------------------------------
    def _send(self, outgoing) -> list:
        return [self.core._send_action(item.data, item.destination) for item in outgoing]

    def _validate(self, request: Request):
        """(status, phrase, headers) when the request must not be forwarded (§16.3), else None."""
        max_forwards = request.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            return 483, "Too Many Hops", ()
        if self._looped(request):
            return 482, "Loop Detected", ()
        proxy_require = request.headers.get_all("Proxy-Require")
        if proxy_require and request.method != "ACK":
            # We know no extension a proxy could be asked for (§16.3 step 5).
            return 420, "Bad Extension", (("Unsupported", ", ".join(proxy_require)),)
        return None

    def _looped(self, request: Request) -> bool:
        vias = request.vias
        for index, via in enumerate(vias[:-1]):
            branch = via.branch or ""
            if branch.startswith(BRANCH_PREFIX):
                stem = branch[len(BRANCH_PREFIX):].partition(".")[0]
                if stem == self._branch_stem(request, vias[index + 1]):
                    return True
        return False

    def _branch_stem(self, request: Request, previous_hop) -> str:
        """§16.6 step 8: the same request from the same previous hop to the same Request-URI
        gets the same stem, so seeing it again in a Via is a loop; a new Request-URI a spiral."""
        material = "\x00".join((str(request.uri), request.call_id, request.from_.tag or "", str(request.cseq[0]),
                                previous_hop.branch or previous_hop.sent_by)).encode()
        return hashlib.blake2b(material, key=self._key, digest_size=8).hexdigest()

    def _stateless_branch(self, request: Request) -> str:
        # Stateless forwarding of the same ACK twice must give the same branch (§16.11).
        return f"{BRANCH_PREFIX}{self._branch_stem(request, request.top_via)}.s{request.cseq[1].lower()}"

    def _fork(self, call: _Call, request: Request, target_uri: str, destination, index, now, *,
              record_route: bool, routes=None, trunk: TrunkLeg | None = None, from_value: str | None = None,
              to_value: str | None = None) -> list:
        branch_id = f"{BRANCH_PREFIX}{self._branch_stem(request, request.top_via)}.{index}"
        if branch_id in self._branches:
            return []
        asserted = None
        if record_route and trunk is None and call.caller:
            # Inside our own domain the authenticated extension is who the call is from (RFC 3325).
            caller = dataclasses.replace(call.request.from_, uri=parse_uri(f"sip:{call.caller}@{self.core.realm}"),
                                         params=())
            asserted = str(caller)
        data, sent = self._forwarded_request(request, call.source, target_uri, destination.transport, branch_id,
                                             record_route=record_route, routes=routes, from_value=from_value,
                                             to_value=to_value, asserted=asserted)
        return self._start_branch(call, branch_id, data, sent, destination, now,
                                  trunk=trunk, challenges={}, nonce_counts={})

    def _start_branch(self, call: _Call, branch_id: str, data: bytes, sent: Request, destination, now, *,
                      trunk=None, challenges=None, nonce_counts=None, cseq_offset: int = 0) -> list:
        invite_client = InviteClient(branch_id, data, destination, destination.reliable, now, self.t1)
        branch = _Branch(call, invite_client, sent, trunk=trunk, challenges=challenges, nonce_counts=nonce_counts,
                         cseq_offset=cseq_offset)
        self._branches[branch_id] = branch
        call.branches.append(branch)
        self._schedule(invite_client)
        return self._send([invite_client.first_send()])

    # -- trunks: answering the upstream's challenge with the trunk's credentials -----------------
    def _answer_trunk_challenge(self, branch: _Branch, response: Response, now: float) -> list:
        """A trunk answered 401/407: send the INVITE again, CSeq one higher, with the trunk's
        credentials — once per challenge; challenged again, the call fails, with the reason."""
        trunk, call = branch.trunk, branch.call
        usable, unusable = parse_challenges(response)
        header = "Proxy-Authorization" if response.status == 407 else "Authorization"
        if not usable:
            offered = ", ".join(unusable) or "no Digest challenge"
            return self._trunk_failed(call, f"trunk '{trunk.name}' asked for an authentication we cannot answer "
                                            f"({offered})", now)
        challenge = usable[0]
        if trunk.expected_realm and challenge.realm != trunk.expected_realm:
            return self._trunk_failed(call, f"realms do not match: server asked for '{challenge.realm}', trunk "
                                            f"'{trunk.name}' expects '{trunk.expected_realm}'", now)
        if header in branch.challenges and (not challenge.stale or branch.stale_answers >= MAX_STALE_ANSWERS):
            return self._trunk_failed(call, f"trunk '{trunk.name}' challenged again ({response.status}): it refused "
                                            f"the credentials of {trunk.username!r}", now)
        challenges = {**branch.challenges, header: challenge}
        nonce_counts = dict(branch.nonce_counts)
        previous = branch.request
        number = previous.cseq[0] + 1
        index = branch.client.branch.rpartition(".")[2]
        branch_id = f"{BRANCH_PREFIX}{self._branch_stem(call.request, call.request.top_via)}.{index}a{number}"
        retry = Request(previous.method, previous.uri, "SIP/2.0", None, previous.body)
        our_via = previous.headers.get_all("Via")[0]
        via_done = False
        for name, value in previous.headers.items():
            lowered = name.lower()
            if lowered in ("authorization", "proxy-authorization", "content-length", "l"):
                continue
            if lowered in ("via", "v") and not via_done:
                value = our_via.replace(branch.client.branch, branch_id)
                via_done = True
            elif lowered == "cseq":
                value = f"{number} INVITE"
            retry.headers.add(name, value)
        for answered_header, answered in challenges.items():
            nonce_counts[answered.nonce] = nonce_counts.get(answered.nonce, 0) + 1
            retry.headers.add(answered_header, answer_challenge(
                answered, username=trunk.username, password=trunk.password, method="INVITE",
                uri=str(previous.uri), nc=nonce_counts[answered.nonce], cnonce=secrets.token_hex(8)))
        actions = self._start_branch(call, branch_id, retry.to_bytes(), retry, branch.client.destination, now,
                                     trunk=trunk, challenges=challenges, nonce_counts=nonce_counts,
                                     cseq_offset=branch.cseq_offset + 1)
        call.branches[-1].stale_answers = branch.stale_answers + (1 if challenge.stale else 0)
        return actions

    def _answer_in_dialog_challenge(self, forwarded: _Forwarded, response: Response, now: float) -> list:
        """A trunk challenged the caller's BYE (or INFO, UPDATE...): answered with the trunk's
        credentials, once, CSeq one higher — the caller's phone knows neither the realm nor
        the password. Anything else goes back as it came."""
        found = self._trunk_dialog_of(forwarded.request)
        if found is None or not found[1] or forwarded.challenged or found[0].trunk is None:
            return []
        dialog = found[0]
        usable, _ = parse_challenges(response)
        if not usable or (dialog.trunk.expected_realm and usable[0].realm != dialog.trunk.expected_realm):
            return []
        from registrar.sip.message import parse_message
        sent = parse_message(forwarded.data)
        number = sent.cseq[0] + 1
        branch = f"{forwarded.branch}.a{number}"
        retry = Request(sent.method, sent.uri, "SIP/2.0", None, sent.body)
        via_done = False
        for name, value in sent.headers.items():
            lowered = name.lower()
            if lowered in ("authorization", "proxy-authorization", "content-length", "l"):
                continue
            if lowered in ("via", "v") and not via_done:
                value = value.replace(forwarded.branch, branch)
                via_done = True
            elif lowered == "cseq":
                value = f"{number} {sent.method}"
            retry.headers.add(name, value)
        challenge = usable[0]
        header = "Proxy-Authorization" if response.status == 407 else "Authorization"
        retry.headers.add(header, answer_challenge(challenge, username=dialog.trunk.username,
                                                   password=dialog.trunk.password, method=sent.method,
                                                   uri=str(sent.uri), nc=1, cnonce=secrets.token_hex(8)))
        key = (forwarded.request.call_id, forwarded.request.from_.tag or "")
        # Later requests of the caller must stay above this one in the trunk's eyes.
        _bounded_put(self._trunk_dialogs, key, dataclasses.replace(dialog, shift=dialog.shift + 1), MAX_TRUNK_DIALOGS)
        context = dataclasses.replace(forwarded, branch=branch, data=retry.to_bytes(), challenged=True)
        first = self._forwarded.start(branch=branch, method=sent.method, data=context.data,
                                      destination=forwarded.destination, context=context, now=now,
                                      reliable=forwarded.destination.reliable)
        return [self.core._send_action(first.data, first.destination)]

    def _trunk_failed(self, call: _Call, why: str, now: float) -> list:
        # The caller cannot answer the trunk's challenge: a 407 passed on would ask it for
        # credentials it does not have. 502: the next hop's answer was unusable to us.
        return self._final_local(call, 502, "Bad Gateway", now=now, why=why)

    def _route_onwards(self, call: _Call, request: Request, now: float, looked_up: bool = False) -> list:
        """A re-INVITE inside a dialog: one branch, to the next Route or the Request-URI."""
        try:
            routes, target_uri, destination = self._next_hop(request)
        except SipError:
            return self._final_local(call, 400, "Bad Request", now=now)
        if destination is None and not looked_up:
            return self._seek(request, lambda at: self._route_onwards(call, request, at, True), now)
        if destination is None:
            return self._final_local(call, 404, "Not Found", now=now)
        self._remember_contact(request, call.source)
        return self._fork(call, request, target_uri, destination, 0, now, record_route=False, routes=routes)

    def _routes_after_us(self, request: Request) -> list:
        """The Route values left once ours (a phone's pre-loaded outbound proxy, or both of a
        double Record-Route) are popped."""
        routes = request.headers.get_all("Route")
        while routes:
            try:
                if not self._is_us(parse_name_addr(routes[0]).uri):
                    break
            except SipError:
                break
            routes = routes[1:]
        return routes

    def _next_hop(self, request: Request):
        """(remaining Route values, Request-URI, destination) after popping our own Route.

        Only the parties of calls set up through us are reached (their Contacts, at the
        source addresses we learned): a crafted Route or Request-URI cannot make Regis relay
        to any other address."""
        routes = self._routes_after_us(request)
        target = parse_name_addr(routes[0]).uri if routes else request.uri
        key = _uri_key(target)
        if key in self._trunk_contacts and self._trunk_dialog_of(request) is None:
            return routes, str(request.uri), None  # a trunk, but no call of ours with it
        return routes, str(request.uri), self._contacts.get(key)

    def _forward_in_dialog(self, request: Request, source, *, branch: str):
        routes, target_uri, destination = self._next_hop(request)
        if destination is None:
            return None, None
        data, _ = self._forwarded_request(request, source, target_uri, destination.transport, branch,
                                          record_route=False, routes=routes)
        return data, destination

    def _forwarded_request(self, request: Request, source, target_uri: str, transport: str, branch: str, *,
                           record_route: bool, routes=None, from_value: str | None = None,
                           to_value: str | None = None, asserted: str | None = None):
        """§16.6: the copy sent on: new Request-URI, Max-Forwards less one, our Record-Route
        and Via on top, the previous hop's Via marked with where it really came from."""
        local_transport, host, port = self._local(transport)
        host_text = f"[{host}]" if ":" in host else host
        via_transport = transport.upper()
        our_via = f"SIP/2.0/{via_transport} {host_text}:{port};branch={branch};rport"
        vias = request.headers.get_all("Via")
        vias = [_received_via(request.top_via, source), *vias[1:]]
        max_forwards = request.max_forwards
        items = []
        placed_vias = False
        for name, value in request.headers.items():
            lowered = name.lower()
            if lowered in ("via", "v"):
                if not placed_vias:
                    items.append(("Via", our_via))
                    items.extend(("Via", via) for via in vias)
                    if record_route:
                        items.append(("Record-Route", self._record_route(transport)))
                        if source.transport != transport:
                            # RFC 5658: the caller's side reaches us on its own transport.
                            items.append(("Record-Route", self._record_route(source.transport)))
                    placed_vias = True
                continue
            if lowered == "max-forwards":
                continue
            if lowered == "route" and routes is not None:
                continue
            if lowered in ("proxy-authorization", "authorization") and record_route:
                # The caller's credentials (a digest for our realm, a bearer token) are ours to
                # check and nobody else's to replay (§22.3, RFC 8898).
                continue
            if lowered in IDENTITY_HEADERS and record_route:
                continue  # a phone's claim about who it is; the asserted identity is added below
            if lowered in ("content-length", "l"):
                continue
            if lowered in ("from", "f") and from_value is not None:
                value = from_value
            if lowered in ("to", "t") and to_value is not None:
                value = to_value
            if not record_route:
                if lowered in ("authorization", "proxy-authorization") and self._trunk_dialog_of(request):
                    continue  # a trunk learns nothing of the caller's credentials
                value = self._translated(request, lowered, value)
            items.append((name, value))
        items.append(("Max-Forwards", str((max_forwards if max_forwards is not None else 70) - 1)))
        if record_route and asserted is not None:
            items.append(("P-Asserted-Identity", asserted))
        if routes:
            items.extend(("Route", route) for route in routes)
        sent = Request(request.method, parse_uri(target_uri), "SIP/2.0", None, request.body)
        for name, value in items:
            sent.headers.add(name, value)
        return sent.to_bytes(), sent

    def _record_route(self, transport: str) -> str:
        local_transport, host, port = self._local(transport)
        host_text = f"[{host}]" if ":" in host else host
        if transport in ("ws", "wss"):
            local_transport = transport  # a browser reaches us only through its websocket
        suffix = "" if local_transport == "udp" else f";transport={local_transport}"
        return f"<sip:{host_text}:{port}{suffix};lr>"

    def _upstream(self, response: Response, branch: _Branch | None = None, request: Request | None = None) -> bytes:
        """The response without our Via (§16.7 step 3). From a trunk, it also gets back the
        caller's From, To and CSeq number: the caller must recognise its own transaction."""
        vias = response.headers.get_all("Via")[1:]
        sent = Response(response.status, response.reason, "SIP/2.0", None, response.body)
        original = branch.call.request if branch is not None and branch.trunk is not None else None
        # An in-dialog request we translated for a trunk dialog: its answer names what the sender sent.
        asked = request if request is not None and self._trunk_dialog_of(request) is not None else None
        placed = False
        for name, value in response.headers.items():
            lowered = name.lower()
            if lowered in ("via", "v"):
                if not placed:
                    for via in vias:
                        sent.headers.add("Via", via)
                    placed = True
                continue
            if lowered in ("content-length", "l"):
                continue
            if original is not None:
                if lowered in ("from", "f"):
                    value = original.headers.get("From")
                elif lowered in ("to", "t"):
                    tag = response.to.tag
                    value = str(dataclasses.replace(original.to, params=tuple(
                        p for p in original.to.params if p[0].lower() != "tag") + ((("tag", tag),) if tag else ())))
                elif lowered == "cseq":
                    value = f"{original.cseq[0]} {original.cseq[1]}"
            elif asked is not None and lowered in ("from", "f", "to", "t", "cseq"):
                value = asked.headers.get({"f": "From", "t": "To"}.get(lowered, name))
            sent.headers.add(name, value)
        return sent.to_bytes()

    def _forward_answer(self, forwarded: _Forwarded, response: Response, now: float) -> list:
        data = self._upstream(response, request=forwarded.request)
        if forwarded.request.method == "BYE" and response.status >= 200:
            found = self._trunk_dialog_of(forwarded.request)
            if found is not None:
                request = forwarded.request
                tags = (request.from_.tag or "", request.to.tag or "")
                self._trunk_dialogs.pop((request.call_id, tags[0] if found[1] else tags[1]), None)
        destination = _response_destination(forwarded.request, forwarded.source)
        self.core._transactions.complete(forwarded.key, data, destination, now, forwarded.source.reliable)
        return [self.core._send_action(data, destination)]

    def _local_response(self, request, source, status, phrase, headers=()) -> bytes:
        data, _ = self.core._response_bytes(request, source, status, phrase, headers)
        return data

    def _final_local(self, call: _Call, status: int, phrase: str, headers=(), *, now: float, why: str = "") -> list:
        call.finished = True
        data = self._local_response(call.request, call.source, status, phrase, headers)
        actions = self._send(call.server.send(data, status, now))
        self._schedule(call.server)
        return actions + self._progress(call, "ended", now, status, why or f"{status} {phrase}")

    def _progress(self, call: _Call, state: str, now: float, status=None, reason: str = "") -> list:
        if not call.recorded:
            return []  # refused before it was routed: the adapter recorded it (or nothing to record)
        request = call.request
        return [CallProgress(request.call_id, (request.from_.tag or "",), state, now, status, reason)]

    def _adopt_final(self, call: _Call, actions: list, now: float) -> list:
        """The core answered (a challenge or refusal): that answer becomes the INVITE
        transaction's final response, retransmitted until the ACK."""
        adopted = []
        for action in actions:
            data = getattr(action, "data", None)
            if data is not None and data.startswith(b"SIP/2.0 "):
                status = int(data[8:11])
                call.finished = True
                adopted += self._send(call.server.send(data, status, now))
                self._schedule(call.server)
            else:
                adopted.append(action)
        return adopted

    def _final_best(self, call: _Call, now: float) -> list:
        best = call.best
        call.finished = True
        if best is None or not best.headers.get_all("Via"):
            return self._final_local(call, 408 if best is None else best.status, "Request Timeout"
                                     if best is None else best.reason, now=now,
                                     why="no answer from the callee's side" if best is None or best.status == 408
                                     else "")
        if best.status == 503:
            # §16.7 step 6: a 503 would tell the caller this proxy is overloaded.
            return self._final_local(call, 500, "Server Internal Error", now=now,
                                     why=f"the callee's side answered 503 {best.reason}")
        branch = next((b for b in call.branches if b.client.branch == best.top_via.branch), None)
        actions = self._send(call.server.send(self._upstream(best, branch, call.request), best.status, now))
        self._schedule(call.server)
        return actions + self._progress(call, "ended", now, best.status, f"{best.status} {best.reason}")

    def _cancel_branches(self, call: _Call, now: float) -> list:
        actions = []
        for branch in call.branches:
            if branch.client.pending and not branch.cancelled:
                if branch.client.state == "proceeding":
                    actions += self._cancel_branch(branch, now)
                else:
                    # §9.1: not before a provisional; sent when one comes (or Timer B ends it).
                    branch.cancel_wanted = True
        return actions

    def _cancel_branch(self, branch: _Branch, now: float) -> list:
        branch.cancelled = True
        invite = branch.request
        lines = [f"CANCEL {invite.uri} SIP/2.0", f"Via: {invite.headers.get_all('Via')[0]}",
                 "Max-Forwards: 70", f"From: {invite.headers.get('From')}", f"To: {invite.headers.get('To')}",
                 f"Call-ID: {invite.call_id}", f"CSeq: {invite.cseq[0]} CANCEL"]
        lines += [f"Route: {route}" for route in invite.headers.get_all("Route")]
        lines.append("Content-Length: 0")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode()
        destination = branch.client.destination
        first = self._forwarded.start(branch=branch.client.branch, method="CANCEL", data=data,
                                      destination=destination, context=branch, now=now,
                                      reliable=destination.reliable)
        return [self.core._send_action(first.data, first.destination)]

    # -- our own requests ------------------------------------------------------------------
    def instant_message(self, target: CallTarget, body: str, branch: str) -> bytes:
        """A SIP MESSAGE (RFC 3428) to a phone's binding, from the registrar itself: the
        emergency-call alert. Sent where the phone registered from, through its Path."""
        _, host, port = self._local(target.transport)
        host_text = f"[{host}]" if ":" in host else host
        payload = body.encode()
        lines = [f"MESSAGE {target.contact_uri} SIP/2.0",
                 f"Via: SIP/2.0/{target.transport.upper()} {host_text}:{port};branch={branch};rport",
                 "Max-Forwards: 70",
                 f'From: "Regis" <sip:regis@{self.core.realm}>;tag={secrets.token_hex(6)}',
                 f"To: <{target.contact_uri}>",
                 f"Call-ID: {secrets.token_hex(12)}@regis",
                 "CSeq: 1 MESSAGE"]
        lines += [f"Route: {route}" for route in target.path]
        lines += ["Content-Type: text/plain;charset=utf-8", f"Content-Length: {len(payload)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload

    # -- where dialog peers are ---------------------------------------------------------------
    def _remember_contact(self, message, source, trunk: bool = False) -> None:
        """The Contact of a caller or callee, reached where its message came from: in-dialog
        requests name it in their Request-URI, and behind NAT only the source leads back."""
        try:
            contacts = message.contacts
        except SipError:
            return
        for contact in contacts[:1]:
            self._contacts_put(_uri_key(contact.uri), source)
            if trunk:
                _bounded_put(self._trunk_contacts, _uri_key(contact.uri), True, MAX_REMEMBERED_CONTACTS)

    def _learn_neighbours(self, response: Response, branch: _Branch) -> None:
        """Proxies that record-routed beside us (a carrier's edge, a phone's outbound proxy):
        in-dialog requests name them in Route after ours, so we must know where they are —
        the one above ours is where we sent the INVITE, the one below where it came from."""
        try:
            uris = [parse_name_addr(value).uri for value in response.headers.get_all("Record-Route")]
        except SipError:
            return
        ours = [index for index, uri in enumerate(uris) if self._is_us(uri)]
        if not ours:
            return
        first, last = ours[0], ours[-1]
        if first > 0:
            self._contacts_put(_uri_key(uris[first - 1]), branch.client.destination)
            if branch.trunk is not None:
                _bounded_put(self._trunk_contacts, _uri_key(uris[first - 1]), True, MAX_REMEMBERED_CONTACTS)
        if last + 1 < len(uris):
            self._contacts_put(_uri_key(uris[last + 1]), branch.call.source)

    def _remember_trunk_dialog(self, branch: _Branch) -> None:
        original, sent = branch.call.request, branch.request
        dialog = _TrunkDialog(branch.cseq_offset, original.headers.get("From"), _without_tag(original.to),
                              sent.headers.get("From"), _without_tag(sent.to), branch.trunk)
        key = (original.call_id, original.from_.tag or "")
        self._trunk_dialogs[key] = dialog
        self._trunk_dialogs.move_to_end(key)
        while len(self._trunk_dialogs) > MAX_TRUNK_DIALOGS:
            self._trunk_dialogs.popitem(last=False)

    def _trunk_dialog_of(self, request: Request):
        """(dialog, True when the caller sent it / False when the trunk did), or None."""
        try:
            call_id, from_tag, to_tag = request.call_id, request.from_.tag or "", request.to.tag or ""
        except SipError:
            return None
        dialog = self._trunk_dialogs.get((call_id, from_tag))
        if dialog is not None:
            return dialog, True
        dialog = self._trunk_dialogs.get((call_id, to_tag))
        return (dialog, False) if dialog is not None else None

    def _translated(self, request: Request, lowered: str, value: str) -> str:
        """A header of an in-dialog request, as the other side of a trunk dialog knows it:
        the caller's requests get the trunk's From/To and CSeq, the trunk's the caller's."""
        found = self._trunk_dialog_of(request)
        if found is None:
            return value
        dialog, from_caller = found
        if lowered in ("from", "f"):
            return dialog.trunk_from if from_caller else _with_tag(dialog.caller_to, request.from_.tag)
        if lowered in ("to", "t"):
            return _with_tag(dialog.trunk_to, request.to.tag) if from_caller else dialog.caller_from
        if lowered == "cseq" and from_caller and dialog.shift:
            number, method = request.cseq
            return f"{number + dialog.shift} {method}"
        return value

    def _contacts_put(self, key, destination) -> None:
        self._contacts[key] = destination
        self._contacts.move_to_end(key)
        while len(self._contacts) > MAX_REMEMBERED_CONTACTS:
            self._contacts.popitem(last=False)


def _bounded_put(mapping: OrderedDict, key, value, limit: int) -> None:
    mapping[key] = value
    mapping.move_to_end(key)
    while len(mapping) > limit:
        mapping.popitem(last=False)


def _without_tag(name_addr) -> str:
    return str(dataclasses.replace(name_addr, params=tuple(p for p in name_addr.params if p[0].lower() != "tag")))


def _with_tag(value: str, tag) -> str:
    return f"{value};tag={tag}" if tag else value


def _rank(status: int) -> tuple:
    """§16.7 step 6: the lowest class wins (6xx is handled before); within 4xx some are more
    telling than others."""
    preferred = {486: 0, 480: 1, 487: 1, 404: 2}
    return (status // 100, preferred.get(status, 5), status)


def _uri_key(uri) -> tuple:
    return (uri.user or "", uri.host.strip("[]"), uri.port or 5060, uri.transport or "udp")


def _received_via(via, source) -> str:
    """The previous hop's Via with received/rport filled in (§18.2.1, RFC 3581)."""
    params = list(via.params)
    has_rport = via.has_param("rport")
    if has_rport or via.host.strip("[]") != source.ip:
        params = [p for p in params if p[0] != "received"] + [("received", source.ip)]
    if has_rport:
        params = [(n, str(source.port) if n == "rport" else v) for n, v in params]
    text = "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)
    return f"{via.protocol}/{via.transport} {via.sent_by}{text}"


def _response_destination(request: Request, source):
    """Where responses to ``request`` go (§18.2.2 and RFC 3581)."""
    from registrar.sip.core import Source
    via = request.top_via
    if via.has_param("rport") or source.reliable:
        return source
    return Source(source.transport, source.ip, via.port or 5060, source.connection)


def _ack_for(invite: Request, response: Response) -> bytes:
    """§17.1.1.3: the ACK of a non-2xx final response, on the INVITE's branch."""
    lines = [f"ACK {invite.uri} SIP/2.0", f"Via: {invite.headers.get_all('Via')[0]}", "Max-Forwards: 70",
             f"From: {invite.headers.get('From')}", f"To: {response.headers.get('To')}",
             f"Call-ID: {invite.call_id}", f"CSeq: {invite.cseq[0]} ACK"]
    lines += [f"Route: {route}" for route in invite.headers.get_all("Route")]
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
