#!/usr/bin/env python3
"""REGISTER throughput with OAuth bearer tokens (cached verdicts) next to digest, on one machine.

    ./regis bench-bearer [--db sqlite|postgres] [--users 1000] [--rates 500,1000,...] [--duration 8]

Two sets of extensions in one database: digest users (benchmarks/register.xml: REGISTER,
401, REGISTER with MD5 digest, 200) and bearer users (benchmarks/register_bearer.xml:
REGISTER with ``Authorization: Bearer <JWT>``, 200). The JWTs are signed with a key made
here and checked by runsip against a JWKS this script serves on loopback (the OAuth
server's "jwks" mode); a warm-up pass verifies every token once, so the measured runs
answer from runsip's token cache — the case issue 6 asks about. Each rate runs SIPp for
``--duration`` seconds per mode; a rate is clean when every flow completed without a
retransmission. Prints a table and writes benchmarks/results/bearer.json and .md.
"""
import argparse
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import run as bench  # benchmarks/run.py: database, runsip and SIPp helpers

BEARER_SCENARIO = bench.BENCH_DIR / "register_bearer.xml"
DIGEST_FIRST = 400_000
BEARER_FIRST = 500_000
KID = "bench-1"


class JwksServer:
    """The public key set, served on loopback while the benchmark runs."""

    def __init__(self, jwks: dict):
        body = json.dumps(jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((bench.LOOPBACK, 0), Handler)
        self.url = f"http://{bench.LOOPBACK}:{self.httpd.server_address[1]}/jwks"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()


def signing_material():
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    key = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": KID, "alg": "ES256", "use": "sig"})
    exp = int(time.time()) + 6 * 3600

    def token(number: int) -> str:
        return jwt.encode({"username": str(number), "exp": exp, "iss": "regis-bench", "aud": "sip"}, key,
                          algorithm="ES256", headers={"kid": KID})

    return {"keys": [public]}, token


def prepare(env: dict, jwks_url: str, users: int) -> None:
    """Extensions of both kinds and the OAuth server, through Regis's own write paths."""
    bench.dbtool(env, "prepare", "--password", bench.PASSWORD, "--range", f"{DIGEST_FIRST}+{users}",
                 "--range", f"{BEARER_FIRST}+{users}")
    script = (
        "import django; django.setup()\n"
        "from registrar import oauth\n"
        "from registrar.models import Extension\n"
        f"server = oauth.create_server(name='bench-jwks', mode='jwks', jwks_url={jwks_url!r}, issuer='regis-bench',"
        " audience='sip', authz_server='https://auth.bench/')\n"
        f"for extension in Extension.objects.filter(number__gte='{BEARER_FIRST}', "
        f"number__lt='{BEARER_FIRST + users}'):\n"
        "    oauth.set_extension_auth(extension, auth_mode='bearer', oauth_server=server)\n"
    )
    completed = bench.subprocess.run([sys.executable, "-c", script], cwd=bench.REPO_ROOT, env=env,
                                     capture_output=True, text=True, timeout=600)
    if completed.returncode:
        raise RuntimeError(f"preparing the bearer users failed:\n{completed.stderr[-3000:]}")


def write_tokens_csv(path: Path, users: int, token) -> Path:
    with open(path, "w") as out:
        out.write("SEQUENTIAL\n")
        for number in range(BEARER_FIRST, BEARER_FIRST + users):
            out.write(f"{number};{token(number)};\n")
    return path


def one_run(runsip, workdir, csv, scenario, rate, duration) -> dict:
    calls = max(1, int(rate * duration))
    cpu_before = runsip.cpu()
    sipp = bench.Sipp(runsip.port, workdir, csv, rate=rate, calls=calls, timeout=duration + 30, scenario=scenario)
    result = sipp.wait()
    result["runsip_cpu_pct"] = round(100 * (runsip.cpu() - cpu_before) / max(result["wall_s"], 0.001), 1)
    result["clean"] = (result["completed"] == calls and not result["failed"] and not result["retransmissions"])
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_DATABASE_URL", bench.DEFAULT_PG_URL))
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rates", default="500,1000,1500,2000,3000")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=bench.BENCH_DIR / "results")
    args = parser.parse_args(argv)
    rates = [int(rate) for rate in args.rates.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="regis-bearer-bench-", dir="/tmp"))
    db = bench.Database(args.db, workdir, args.pg_url)
    db.create()
    env = bench.django_env(db, workdir / "data")
    env["OAUTH_CACHE_SECONDS"] = str(6 * 3600)  # the cached case: verdicts live as long as the tokens
    jwks, token = signing_material()
    jwks_server = JwksServer(jwks)
    runsip = None
    report = {"db": args.db, "users": args.users, "duration_s": args.duration, "rates": {}}
    try:
        bench.log(f"migrating {args.db} and creating 2 x {args.users} extensions ...")
        bench.migrate(env)
        prepare(env, jwks_server.url, args.users)
        digest_csv = bench.write_users_csv(workdir / "digest.csv", DIGEST_FIRST, args.users)
        bearer_csv = write_tokens_csv(workdir / "bearer.csv", args.users, token)
        runsip = bench.RunSip(env, bench.free_udp_port(), 1, workdir / "runsip.log")
        runsip.start()
        time.sleep(1.0)  # the OAuth setup is read with the first cache refresh
        warm = one_run(runsip, workdir / "warm", bearer_csv, BEARER_SCENARIO, 200, args.users / 200)
        bench.log(f"warm-up: {warm['completed']}/{warm['calls']} bearer REGISTERs (every token verified once)")
        if warm["completed"] != warm["calls"]:
            raise RuntimeError(f"warm-up failed: {warm['sipp_errors']}\n{runsip.tail()}")
        bench.log(f"{'rate/s':>7} | {'bearer done':>11} {'retr':>5} {'p99<=ms':>7} {'cpu%':>5} | "
                  f"{'digest done':>11} {'retr':>5} {'p99<=ms':>7} {'cpu%':>5}")
        for rate in rates:
            row = {}
            for mode, csv, scenario in (("bearer", bearer_csv, BEARER_SCENARIO),
                                        ("digest", digest_csv, bench.SCENARIO)):
                row[mode] = one_run(runsip, workdir / f"{mode}-{rate}", csv, scenario, rate, args.duration)
                time.sleep(bench.PAUSE)
            report["rates"][rate] = row
            b, d = row["bearer"], row["digest"]
            bench.log(f"{rate:>7} | {b['completed']:>5}/{b['calls']:<5} {b['retransmissions']:>5} "
                      f"{b['sipp_flow_p99_le_ms'] or '-':>7} {b['runsip_cpu_pct']:>5} | "
                      f"{d['completed']:>5}/{d['calls']:<5} {d['retransmissions']:>5} "
                      f"{d['sipp_flow_p99_le_ms'] or '-':>7} {d['runsip_cpu_pct']:>5}")
        for mode in ("bearer", "digest"):
            clean = [rate for rate, row in report["rates"].items() if row[mode]["clean"]]
            report[f"highest_clean_{mode}"] = max(clean) if clean else None
        bench.log(f"highest clean rate: bearer {report['highest_clean_bearer']}/s, "
                  f"digest {report['highest_clean_digest']}/s (flows/s; a bearer flow is 1 request, a digest flow 2)")
    finally:
        if runsip is not None:
            runsip.stop()
        jwks_server.stop()
        db.drop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"bearer-{args.db}.json").write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
