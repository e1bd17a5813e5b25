"""TLS, mutual TLS and the plaintext health-only port, end to end.

Certificates are made here with the openssl command line (a CA, a server
certificate for 127.0.0.1, a client certificate, and a second CA that the
server does not trust). sparse-server runs with --tls_cert/--tls_key/
--tls_client_ca and --health_port; sparse-cli talks to it with and without
the right credentials. What a user relies on:
  - with the CA and a client certificate, predict, models and bench work;
  - no TLS, no client certificate, a client certificate from another CA, or
    a server checked against the wrong CA: every call fails;
  - the plaintext health port answers health checks (server and per model)
    and nothing else;
  - a key or certificate that is not PEM stops the server at start with a
    message naming the flag;
  - a front reaches shards that require mutual TLS with --shard_tls_ca/
    --shard_tls_cert/--shard_tls_key and answers as the unsharded server;
    in plaintext, without a client certificate or with the wrong CA it
    loads nothing.

Usage: tls_test.py <source dir> <build dir>
"""
import json
import os
import subprocess
import sys
import tempfile

source, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import check, finish, run, stop  # noqa: E402
SERVER = os.path.join(build, "server", "sparse-server")
CLI = os.path.join(build, "client", "sparse-cli")


def openssl(*args):
    done = run(["openssl"] + list(args))
    if done.returncode != 0:
        sys.exit("openssl %s failed: %s" % (" ".join(args), done.stderr))


def make_ca(d, name):
    key, cert = os.path.join(d, name + ".key"), os.path.join(d, name + ".pem")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=" + name,
            "-keyout", key, "-out", cert)
    return key, cert


def make_cert(d, name, ca_key, ca_cert, san=None):
    key, csr, cert = (os.path.join(d, name + ext) for ext in (".key", ".csr", ".pem"))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + name, "-keyout", key, "-out", csr)
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\n" % san if san else "extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
            "-days", "2", "-extfile", ext, "-out", cert)
    return key, cert


def start_server(repo, *flags):
    server = subprocess.Popen([SERVER, "--model_repository=" + repo, "--address=127.0.0.1", "--port=0"]
                              + list(flags), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return server


with tempfile.TemporaryDirectory() as tmp:
    repo = os.path.join(tmp, "repo")
    done = run(["/usr/bin/python3", os.path.join(source, "docs", "examples", "write_dsm_checkpoint.py"),
                os.path.join(repo, "m"), "1"])
    if done.returncode != 0:
        sys.exit("writing the example checkpoint failed: " + done.stderr)
    ca_key, ca = make_ca(tmp, "ca")
    rogue_key, rogue_ca = make_ca(tmp, "rogue")
    server_key, server_cert = make_cert(tmp, "server", ca_key, ca, san="IP:127.0.0.1,DNS:localhost")
    client_key, client_cert = make_cert(tmp, "client", ca_key, ca)
    rogue_client_key, rogue_client_cert = make_cert(tmp, "intruder", rogue_key, rogue_ca)

    # PEM-looking garbage: refused at start, naming the files.
    fake = os.path.join(tmp, "fake.pem")
    with open(fake, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    bad = start_server(repo, "--tls_cert=" + fake, "--tls_key=" + server_key)
    out, err = bad.communicate(timeout=30)
    check(bad.returncode == 1 and "--tls_cert=" + fake in err,
          "an invalid certificate stops the server naming it: %s %s" % (bad.returncode, err[-300:]))

    # Not PEM: refused at start, naming the flag.
    junk = os.path.join(tmp, "junk.pem")
    with open(junk, "w") as f:
        f.write("not a key\n")
    bad = start_server(repo, "--tls_cert=" + server_cert, "--tls_key=" + junk)
    out, err = bad.communicate(timeout=30)
    check(bad.returncode == 1 and "--tls_key" in err and "PEM" in err,
          "a non-PEM --tls_key stops the server: %s %s" % (bad.returncode, err))

    server = start_server(repo, "--tls_cert=" + server_cert, "--tls_key=" + server_key,
                          "--tls_client_ca=" + ca, "--health_port=0", "--http_port=0")
    try:
        port, health_port = int(server.stdout.readline()), int(server.stdout.readline())
        http_port = int(server.stdout.readline())
        target = "--target=127.0.0.1:%d" % port
        good = ["--tls_ca=" + ca, "--tls_cert=" + client_cert, "--tls_key=" + client_key]
        short = ["--timeout_ms=5000"]

        ok = run([CLI, target] + good + ["predict", "--model=m", "--inputs=0.1,0.2,0.3,0.4", "--json"])
        check(ok.returncode == 0 and json.loads(ok.stdout)["sparse"]["rows"] in (1, "1"),
              "predict over mutual TLS: " + ok.stdout + ok.stderr)
        whole = json.loads(ok.stdout)["sparse"] if ok.returncode == 0 else None
        models = run([CLI, target] + good + ["models"])
        check(models.returncode == 0 and "m " in models.stdout, "models over mutual TLS: " + models.stderr)
        bench = run([CLI, target] + good + ["bench", "--model=m", "--warmup_seconds=0.1",
                                             "--window_seconds=0.2", "--stable_windows=1",
                                             "--max_windows=1", "--json", "--quiet"])
        check(bench.returncode == 0 and all(r["errors"] == 0 for r in json.loads(bench.stdout)["results"]),
              "bench over mutual TLS: " + bench.stdout + bench.stderr)

        for label, creds in (
                ("plaintext", []),
                ("TLS without a client certificate", ["--tls_ca=" + ca]),
                ("a client certificate from another CA",
                 ["--tls_ca=" + ca, "--tls_cert=" + rogue_client_cert, "--tls_key=" + rogue_client_key]),
                ("the server checked against the wrong CA",
                 ["--tls_ca=" + rogue_ca, "--tls_cert=" + client_cert, "--tls_key=" + client_key])):
            refused = run([CLI, target] + short + creds + ["predict", "--model=m", "--inputs=0.1,0.2,0.3,0.4"])
            check(refused.returncode == 1 and "UNAVAILABLE" in refused.stderr,
                  "%s is refused: %s %s" % (label, refused.returncode, refused.stderr))

        # The REST port has the same TLS: https with a client certificate,
        # and nothing without one.
        url = "https://127.0.0.1:%d/v2/models/m/infer" % http_port
        body = '{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[0.1,0.2,0.3,0.4]}]}'
        rest = run(["curl", "-s", "-w", "\n%{http_code}", "--cacert", ca, "--cert", client_cert, "--key",
                    client_key, "-X", "POST", "-d", body, url])
        check(rest.returncode == 0 and rest.stdout.endswith("\n200") and '"outputs"' in rest.stdout,
              "REST infer over mutual TLS: %s %s" % (rest.stdout, rest.stderr))
        for label, creds in (("plain http", None), ("https without a client certificate", ["--cacert", ca]),
                             ("a client certificate from another CA",
                              ["--cacert", ca, "--cert", rogue_client_cert, "--key", rogue_client_key])):
            target_url = url.replace("https:", "http:") if creds is None else url
            refused = run(["curl", "-s", "-w", "\n%{http_code}", "-X", "POST", "-d", body, target_url]
                          + (creds or []))
            check(not refused.stdout.endswith("\n200"),
                  "REST: %s is refused: %s %s" % (label, refused.returncode, refused.stdout))

        health_target = "--target=127.0.0.1:%d" % health_port
        live = run([CLI, health_target, "health"])
        check(live.returncode == 0 and "SERVING" in live.stdout, "plaintext health port, server: " + live.stdout + live.stderr)
        ready = run([CLI, health_target, "health", "--model=m"])
        check(ready.returncode == 0 and "SERVING" in ready.stdout, "plaintext health port, model: " + ready.stdout + ready.stderr)
        other = run([CLI, health_target] + short + ["models"])
        check(other.returncode == 1 and "UNIMPLEMENTED" in other.stderr,
              "the health port serves nothing else: " + other.stderr)
        # Not even server reflection (which would hand out the API's schema).
        import grpc
        channel = grpc.insecure_channel("127.0.0.1:%d" % health_port)
        reflect = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                        request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            answers = list(reflect(iter([b"\x3a\x00"]), timeout=5))  # list_services: ""
            check(False, "reflection answered on the health port: %r" % answers)
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.UNIMPLEMENTED, "reflection on the health port: %s" % e.code())
    finally:
        code, log = stop(server)
    check(code == 0 and "mutual TLS" in log, "server said mutual TLS and stopped cleanly (exit %s): %s" % (code, log))

    # Sharded: two shards with mutual TLS, and fronts that reach them with
    # --shard_tls_*. A front with the CA and a client certificate serves the
    # unsharded answer; a front in plaintext, without a client certificate,
    # or checking the shards against the wrong CA loads nothing.
    shards = [start_server(repo, "--shard=%d/2" % i, "--tls_cert=" + server_cert, "--tls_key=" + server_key,
                           "--tls_client_ca=" + ca) for i in range(2)]
    front = None
    try:
        targets = ";".join("127.0.0.1:%d" % int(shard.stdout.readline()) for shard in shards)
        front = start_server(repo, "--shard_targets=" + targets, "--shard_tls_ca=" + ca,
                             "--shard_tls_cert=" + client_cert, "--shard_tls_key=" + client_key,
                             "--shard_wait_seconds=30")
        front_port = int(front.stdout.readline())
        via = run([CLI, "--target=127.0.0.1:%d" % front_port, "predict", "--model=m",
                   "--inputs=0.1,0.2,0.3,0.4", "--json"])
        check(via.returncode == 0, "predict through a front over mutual TLS to its shards: " + via.stderr)
        if via.returncode == 0 and whole is not None:
            sharded = json.loads(via.stdout)["sparse"]
            check(sharded["cost"]["shards"] >= 1 and sharded["cost"]["flops"] == whole["cost"]["flops"]
                  and sharded["route"] == whole["route"]
                  and all(abs(a - b) <= 1e-5 * max(1.0, abs(b))
                          for a, b in zip(sharded["outputs"], whole["outputs"])),
                  "the front's answer is the unsharded one: %s vs %s" % (sharded, whole))
        for label, flags in (
                ("plaintext", []),
                ("without a client certificate", ["--shard_tls_ca=" + ca]),
                ("checking the shards against the wrong CA",
                 ["--shard_tls_ca=" + rogue_ca, "--shard_tls_cert=" + client_cert,
                  "--shard_tls_key=" + client_key])):
            refused = start_server(repo, "--shard_targets=" + targets, "--shard_wait_seconds=1", *flags)
            out, err = refused.communicate(timeout=60)
            check(refused.returncode == 1 and "not every shard serves version 1" in err,
                  "a front %s loads nothing from TLS shards: %s %s" % (label, refused.returncode, err[-600:]))
        half = start_server(repo, "--shard_targets=" + targets, "--shard_tls_cert=" + client_cert)
        out, err = half.communicate(timeout=30)
        check(half.returncode == 1 and "--shard_tls_key" in err,
              "--shard_tls_cert alone stops a front naming --shard_tls_key: %s" % err[-300:])
        lone = start_server(repo, "--shard_tls_ca=" + ca)
        out, err = lone.communicate(timeout=30)
        check(lone.returncode == 1 and "--shard_targets" in err,
              "--shard_tls_ca without --shard_targets is refused: %s" % err[-300:])
    finally:
        for process in [front] + shards:
            if process is not None and process.poll() is None:
                stop(process)

finish()
