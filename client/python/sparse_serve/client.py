"""Calling sparse-server from Python with NumPy arrays.

    from sparse_serve import Client
    with Client("127.0.0.1:8500") as client:
        p = client.predict("poly_dsm", x)            # x: (rows, d) or (d,)
        p.outputs, p.cost.flops, p.version
        client.predict("poly_dsm", x, dense=True)     # the dense baseline

predict takes any number of rows: more than the server's row limit
(sparse-server --max_batch_rows, which GetModel reports) go in requests of
at most that many rows, one after another in order, and come back as one
Prediction.

Client speaks the native API (sparse.v1.SparseInference) by default, or the
Open Inference Protocol v2 (inference.GRPCInferenceService) with
protocol="oip". AsyncClient is the same on grpc.aio. Every failed call
raises SparseServeError, which carries the gRPC status code and message.
"""
import dataclasses
import sys
import time
from typing import Dict, List, Optional, Tuple

import grpc
import numpy as np

from sparse_serve._generated.grpc.health.v1 import health_pb2, health_pb2_grpc
from sparse_serve._generated.inference import grpc_service_pb2 as oip_pb
from sparse_serve._generated.inference import grpc_service_pb2_grpc as oip_grpc
from sparse_serve._generated.sparse.v1 import inference_pb2 as pb
from sparse_serve._generated.sparse.v1 import inference_pb2_grpc as pb_grpc

PROTOCOLS = ("native", "oip")
# The server bounds message sizes itself (docs/security.md).
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


class SparseServeError(Exception):
    """A call the server (or the channel) answered with an error.

    code: the grpc.StatusCode (INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, ...;
    docs/api.md lists what each means); details: the server's message."""

    def __init__(self, code, details):
        super().__init__("%s: %s" % (code.name, details))
        self.code = code
        self.details = details


@dataclasses.dataclass(frozen=True)
class Cost:
    """What a request cost on the server (times in nanoseconds). Over OIP
    only flops, dense_flops, weight_bytes, major_faults, queue_ns and
    compute_ns (route + compute) are reported (and shards and fanout_ns); the
    rest are 0. weight_bytes: the bytes of weights the kernels read (a
    batch's shared by rows). major_faults: the major page faults (pages read
    from disk) the server's compute took, a batch's shared by rows as
    weight_bytes are. A sharded model (docs/deploy.md): shards, how many
    shards the request's batch called, and fanout_ns, the wall time of those
    calls; flops, weight_bytes, major_faults and compute_ns include the
    shards'."""
    flops: int
    dense_flops: int
    queue_ns: int = 0
    route_ns: int = 0
    compute_ns: int = 0
    total_ns: int = 0
    batch_size: int = 0
    weight_bytes: int = 0
    shards: int = 0
    fanout_ns: int = 0
    major_faults: int = 0


@dataclasses.dataclass(frozen=True)
class Route:
    """Where each row went (native protocol, sparse path, route=True).
    LSH tables: bucket_keys and bucket_missed, (rows, tables). DSM:
    expert_ids, (rows, blocks). The other arrays are empty."""
    bucket_keys: np.ndarray
    bucket_missed: np.ndarray
    expert_ids: np.ndarray


@dataclasses.dataclass(frozen=True)
class Prediction:
    """outputs: float32, (rows, o), or (o,) when the input was one row of
    shape (d,). dense_cost_only: PredictDense on a DSM without a trained
    twin ran the DSM's own weights unmasked (a cost baseline, not a model)."""
    outputs: np.ndarray
    model: str
    version: int
    cost: Cost
    route: Optional[Route] = None
    dense_cost_only: bool = False


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    version: int
    kind: str
    description: str
    input_dim: int
    output_dim: int
    flops_per_row: int
    dense_flops_per_row: int
    parameters: int
    dense_parameters: int
    has_dense: bool
    dense_cost_only: bool
    info: Dict[str, str]
    # config.pbtxt's precision; weight bytes a one-row request reads on each
    # path; bytes the version's weights hold in process memory (both paths;
    # mapped weights are not counted here).
    precision: str = "FP32"
    weight_bytes_per_row: int = 0
    dense_weight_bytes_per_row: int = 0
    resident_bytes: int = 0
    # A sharded model (docs/deploy.md): on its front, the shard count; on a
    # shard server, the part it holds ("2/4").
    shards: int = 0
    shard: str = ""
    # Weights served from the weight cache file (sparse-server
    # --weight_cache_dir; docs/api.md): bytes mapped, both paths, and how many
    # of them were in memory (mincore) when the server answered; the file on
    # the server and its verification mode ("load" or "touch"). 0 and "" when
    # the weights were copied in.
    mapped_bytes: int = 0
    mapped_resident_bytes: int = 0
    weight_cache_file: str = ""
    weight_verify: str = ""
    # A mapped routed DSM: bytes of each expert's slice, and of each how many
    # are in memory, [block * experts + expert] (empty otherwise).
    experts: int = 0
    expert_bytes: int = 0
    expert_resident_bytes: Tuple[int, ...] = ()

    @property
    def mapped_resident_fraction(self) -> float:
        """The share of the mapped weights in memory (0 when none are mapped)."""
        return self.mapped_resident_bytes / self.mapped_bytes if self.mapped_bytes else 0.0


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    name: str
    serving_version: int
    versions: List[VersionInfo]
    failed_versions: Dict[int, str]
    config_error: str
    # Set for a model folder that serves nothing, saying why ("no version
    # directory to serve: v1/ is not a version ...", a refused ".dense" name).
    not_served: str = ""
    # The most rows one request may carry (sparse-server --max_batch_rows).
    max_batch_rows: int = 0


def _rows(x):
    """x as C-contiguous float32 rows, and whether it was one row (d,)."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim == 1:
        return a.reshape(1, -1), True
    if a.ndim != 2:
        raise ValueError("predict: x must have shape (rows, d) or (d,), got %s" % (a.shape,))
    return a, False


def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _predict_request(model, a, version, route):
    """A serialized PredictRequest whose inputs are the array's bytes as
    they are (field 4, packed floats): no per-float Python work."""
    head = pb.PredictRequest(model=model, version=version or 0, rows=a.shape[0],
                             return_route=route).SerializeToString()
    raw = a.tobytes()
    return head + b"\x22" + _varint(len(raw)) + raw


def _prediction(r, one_row):
    outputs = np.array(r.outputs, dtype=np.float32).reshape(r.rows, r.output_dim)
    route = None
    if r.HasField("route"):
        q = r.route
        rows = max(r.rows, 1)
        route = Route(
            bucket_keys=np.array(q.bucket_keys, dtype=np.uint64).reshape(rows, q.keys_per_row) if q.keys_per_row
            else np.zeros((0,), np.uint64),
            bucket_missed=np.array(q.bucket_missed, dtype=bool).reshape(rows, q.keys_per_row) if q.keys_per_row
            else np.zeros((0,), bool),
            expert_ids=np.array(q.expert_ids, dtype=np.int32).reshape(rows, q.experts_per_row)
            if q.experts_per_row else np.zeros((0,), np.int32))
    c = r.cost
    return Prediction(outputs=outputs[0] if one_row else outputs, model=r.model, version=r.version,
                      cost=Cost(c.flops, c.dense_flops, c.queue_ns, c.route_ns, c.compute_ns, c.total_ns,
                                c.batch_size, c.weight_bytes, c.shards, c.fanout_ns, c.major_faults),
                      route=route, dense_cost_only=r.dense_cost_only)


def _infer_request(model, a, version, dense):
    request = oip_pb.ModelInferRequest(model_name=model + (".dense" if dense else ""),
                                       model_version=str(version) if version else "")
    request.inputs.add(name="input", datatype="FP32", shape=list(a.shape))
    request.raw_input_contents.append(a.tobytes())
    return request


def _inferred(model, r, one_row):
    out = r.outputs[0]
    if r.raw_output_contents:
        values = np.frombuffer(r.raw_output_contents[0], dtype="<f4")
    else:
        values = np.array(out.contents.fp32_contents, dtype=np.float32)
    values = values.reshape(tuple(out.shape))
    p = r.parameters
    cost = Cost(flops=p["flops"].int64_param if "flops" in p else 0,
                dense_flops=p["dense_flops"].int64_param if "dense_flops" in p else 0,
                queue_ns=p["queue_ns"].int64_param if "queue_ns" in p else 0,
                compute_ns=p["compute_ns"].int64_param if "compute_ns" in p else 0,
                weight_bytes=p["weight_bytes"].int64_param if "weight_bytes" in p else 0,
                shards=p["shards"].int64_param if "shards" in p else 0,
                fanout_ns=p["fanout_ns"].int64_param if "fanout_ns" in p else 0,
                major_faults=p["major_faults"].int64_param if "major_faults" in p else 0)
    return Prediction(outputs=values[0] if one_row else values, model=model,
                      version=int(r.model_version) if r.model_version else 0, cost=cost)


def _model_info(m):
    return ModelInfo(
        name=m.name, serving_version=m.serving_version,
        versions=[VersionInfo(v.version, v.kind, v.description, v.input_dim, v.output_dim, v.flops_per_row,
                              v.dense_flops_per_row, v.parameters, v.dense_parameters, v.has_dense,
                              v.dense_cost_only, dict(v.info), v.precision or "FP32", v.weight_bytes_per_row,
                              v.dense_weight_bytes_per_row, v.resident_bytes, v.shards, v.shard,
                              mapped_bytes=v.mapped_bytes, mapped_resident_bytes=v.mapped_resident_bytes,
                              weight_cache_file=v.weight_cache_file, weight_verify=v.weight_verify,
                              experts=v.experts, expert_bytes=v.expert_bytes,
                              expert_resident_bytes=tuple(v.expert_resident_bytes))
                  for v in m.versions],
        failed_versions={f.version: f.error for f in m.failed_versions}, config_error=m.config_error,
        not_served=m.not_served, max_batch_rows=m.max_batch_rows)


class _Progress:
    """A progress line on stderr for a long predict: with progress=None only
    when stderr is a terminal and the run has taken a second; True: always
    (after a second); False: never."""

    def __init__(self, progress, total, label):
        self.on = progress if progress is not None else sys.stderr.isatty()
        self.total, self.label, self.start, self.shown = total, label, time.monotonic(), False
        self.drawn = 0.0

    def update(self, done):
        """Redrawn at most every 100 ms, and at the end."""
        now = time.monotonic()
        if not self.on or now - self.start < 1.0 or (done < self.total and now - self.drawn < 0.1):
            return
        self.drawn = now
        filled = 30 * done // max(self.total, 1)
        sys.stderr.write("\rsparse_serve: %-6s [%s%s] %d/%d rows"
                         % (self.label, "#" * filled, "." * (30 - filled), done, self.total))
        sys.stderr.flush()
        self.shown = True

    def close(self):
        if self.shown:
            sys.stderr.write("\n")


def _chunks(rows, limit):
    """(start, stop) of requests of at most `limit` rows (all in one when 0)."""
    limit = limit if limit and limit > 0 else max(rows, 1)
    return [(start, min(start + limit, rows)) for start in range(0, max(rows, 1), limit)]


def _joined(parts, one_row):
    """One Prediction of the parts' rows in order, their costs summed
    (batch_size and shards: the largest)."""
    if len(parts) == 1:
        p = parts[0]
        return dataclasses.replace(p, outputs=p.outputs[0]) if one_row else p
    first = parts[0]
    cost = Cost(**{f.name: (max if f.name in ("batch_size", "shards") else sum)(
        getattr(p.cost, f.name) for p in parts) for f in dataclasses.fields(Cost)})
    route = None
    if first.route is not None:
        route = Route(*[np.concatenate([getattr(p.route, f) for p in parts])
                        for f in ("bucket_keys", "bucket_missed", "expert_ids")])
    return dataclasses.replace(first, outputs=np.concatenate([p.outputs for p in parts]), cost=cost,
                               route=route)


def _check_protocol(protocol):
    if protocol not in PROTOCOLS:
        raise ValueError("protocol must be one of %s, got %r" % (", ".join(PROTOCOLS), protocol))


def _check_route(protocol, route, dense):
    if route and protocol != "native":
        raise ValueError("route=True needs the native protocol: the Open Inference Protocol has no route")
    if route and dense:
        raise ValueError("route=True is for the sparse path: the dense baseline has no route")


def _channel(module, target, credentials, options):
    options = _CHANNEL_OPTIONS + list(options)
    if credentials is not None:
        return module.secure_channel(target, credentials, options=options)
    return module.insecure_channel(target, options=options)


class _Stubs:
    """The channel and stubs both clients share; `module` is grpc or grpc.aio."""

    def __init__(self, module, target, protocol, credentials, timeout, options):
        _check_protocol(protocol)
        self.protocol = protocol
        self.timeout = timeout
        self._channel = _channel(module, target, credentials, options)
        self._stub = pb_grpc.SparseInferenceStub(self._channel)
        self._oip = oip_grpc.GRPCInferenceServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._limits = {}  # model -> rows per request (row_limit)
        # Predict and PredictDense with requests serialized by
        # _predict_request (the inputs copied as bytes).
        self._raw = {dense: self._channel.unary_unary(
            "/sparse.v1.SparseInference/" + ("PredictDense" if dense else "Predict"),
            request_serializer=lambda b: b, response_deserializer=pb.PredictResponse.FromString)
            for dense in (False, True)}


class Client(_Stubs):
    """A blocking client. target: "host:port". credentials: grpc channel
    credentials for TLS (grpc.ssl_channel_credentials(...)); None for
    plaintext. timeout: the default deadline of each call, in seconds.
    Thread-safe; close() (or a with block) releases the channel."""

    def __init__(self, target, protocol="native", credentials=None, timeout=30.0, options=()):
        _Stubs.__init__(self, grpc, target, protocol, credentials, timeout, options)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._channel.close()

    def _call(self, method, request, timeout):
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as e:
            raise SparseServeError(e.code(), e.details()) from None

    def predict(self, model, x, dense=False, version=None, route=False, timeout=None, max_rows=None,
                progress=None):
        """Runs x (rows, d) through `model`'s routed sparse path, or its
        dense baseline with dense=True. version: None for the newest loaded
        (a split input is answered by the version its first request got).
        route: also return where each row went (native protocol only).
        max_rows: rows per request (None: the server's limit). progress:
        a progress line on stderr (None: on a terminal, after a second).
        timeout applies to each request."""
        _check_route(self.protocol, route, dense)
        a, one_row = _rows(x)
        limit = (max_rows or self.row_limit(model, timeout)) if a.shape[0] > 1 else 1
        bar, parts = _Progress(progress, a.shape[0], "dense" if dense else "sparse"), []
        try:
            for start, stop in _chunks(a.shape[0], limit):
                parts.append(self._predict_rows(model, a[start:stop], dense, version, route, timeout))
                version = version or parts[0].version
                bar.update(stop)
        finally:
            bar.close()
        return _joined(parts, one_row)

    def _predict_rows(self, model, a, dense, version, route, timeout):
        if self.protocol == "oip":
            return _inferred(model, self._call(self._oip.ModelInfer, _infer_request(model, a, version, dense),
                                               timeout), False)
        return _prediction(self._call(self._raw[dense], _predict_request(model, a, version, route), timeout),
                           False)

    def row_limit(self, model, timeout=None):
        """The most rows one request to `model` may carry: GetModel's
        max_batch_rows (OIP: ModelConfig's max_batch_size); 0 when the
        server does not say. Asked once per model and client."""
        if model not in self._limits:
            if self.protocol == "oip":
                self._limits[model] = self._call(self._oip.ModelConfig, oip_pb.ModelConfigRequest(name=model),
                                                 timeout).config.max_batch_size
            else:
                self._limits[model] = self.model(model, timeout).max_batch_rows
        return self._limits[model]

    def models(self, timeout=None):
        """Every model the server knows, with its loaded versions."""
        return [_model_info(m) for m in self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout).models]

    def model(self, name, timeout=None):
        return _model_info(self._call(self._stub.GetModel, pb.GetModelRequest(model=name), timeout))

    def health(self, model="", timeout=None):
        """True when the server is live (model="") or `model` has a version
        serving; False when it answers NOT_SERVING. Errors (no such model,
        no server) raise SparseServeError."""
        r = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=model), timeout)
        return r.status == health_pb2.HealthCheckResponse.SERVING


class AsyncClient(_Stubs):
    """Client on grpc.aio: the same methods, as coroutines.

        async with AsyncClient("127.0.0.1:8500") as client:
            p = await client.predict("poly_dsm", x)
    """

    def __init__(self, target, protocol="native", credentials=None, timeout=30.0, options=()):
        _Stubs.__init__(self, grpc.aio, target, protocol, credentials, timeout, options)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self):
        await self._channel.close()

    async def _call(self, method, request, timeout):
        try:
            return await method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as e:
            raise SparseServeError(e.code(), e.details()) from None

    async def predict(self, model, x, dense=False, version=None, route=False, timeout=None, max_rows=None,
                      progress=None):
        _check_route(self.protocol, route, dense)
        a, one_row = _rows(x)
        limit = (max_rows or await self.row_limit(model, timeout)) if a.shape[0] > 1 else 1
        bar, parts = _Progress(progress, a.shape[0], "dense" if dense else "sparse"), []
        try:
            for start, stop in _chunks(a.shape[0], limit):
                parts.append(await self._predict_rows(model, a[start:stop], dense, version, route, timeout))
                version = version or parts[0].version
                bar.update(stop)
        finally:
            bar.close()
        return _joined(parts, one_row)

    async def _predict_rows(self, model, a, dense, version, route, timeout):
        if self.protocol == "oip":
            return _inferred(model, await self._call(self._oip.ModelInfer,
                                                     _infer_request(model, a, version, dense), timeout), False)
        return _prediction(await self._call(self._raw[dense], _predict_request(model, a, version, route),
                                            timeout), False)

    async def row_limit(self, model, timeout=None):
        if model not in self._limits:
            if self.protocol == "oip":
                r = await self._call(self._oip.ModelConfig, oip_pb.ModelConfigRequest(name=model), timeout)
                self._limits[model] = r.config.max_batch_size
            else:
                self._limits[model] = (await self.model(model, timeout)).max_batch_rows
        return self._limits[model]

    async def models(self, timeout=None):
        r = await self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return [_model_info(m) for m in r.models]

    async def model(self, name, timeout=None):
        return _model_info(await self._call(self._stub.GetModel, pb.GetModelRequest(model=name), timeout))

    async def health(self, model="", timeout=None):
        r = await self._call(self._health.Check, health_pb2.HealthCheckRequest(service=model), timeout)
        return r.status == health_pb2.HealthCheckResponse.SERVING
