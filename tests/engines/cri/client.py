#!/usr/bin/python3
"""A minimal CRI client for tests/engines/cri.rs: one CRI v1 call per run, in place of crictl
(which Debian 12 does not package). The request is JSON in the proto's field names, the answer
JSON on stdout (bytes fields decoded as UTF-8 text); a gRPC error goes to stderr with its code
and exits 1, a usage or set-up error exits 2.

    client.py GENDIR SOCKET SERVICE.METHOD [REQUEST_JSON]

GENDIR holds the Python code grpc_tools.protoc makes from api.proto beside this file; it is made
there on the first call (python3-grpc-tools, python3-grpcio: scripts/setup installs them).
"""
import json
import os
import sys


def generate(gendir):
    """api_pb2.py and api_pb2_grpc.py in gendir, from api.proto next to this script."""
    if os.path.exists(os.path.join(gendir, "api_pb2_grpc.py")):
        return
    from grpc_tools import protoc

    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(gendir, exist_ok=True)
    args = ["protoc", "-I" + here, "--python_out=" + gendir, "--grpc_python_out=" + gendir, os.path.join(here, "api.proto")]
    if protoc.main(args) != 0:
        sys.exit("client.py: grpc_tools.protoc failed on %s/api.proto (output dir %s)" % (here, gendir))


def main(argv):
    if len(argv) not in (4, 5) or "." not in argv[3]:
        sys.stderr.write(__doc__)
        return 2
    gendir, socket, call = argv[1], argv[2], argv[3]
    request_json = argv[4] if len(argv) == 5 else "{}"
    try:
        generate(gendir)
        sys.path.insert(0, gendir)
        import grpc
        from google.protobuf import json_format
        import api_pb2
        import api_pb2_grpc
    except ImportError as e:
        print("client.py: %s (install python3-grpcio and python3-grpc-tools)" % e, file=sys.stderr)
        return 2

    service_name, method_name = call.split(".", 1)
    service = api_pb2.DESCRIPTOR.services_by_name.get(service_name)
    method = service.methods_by_name.get(method_name) if service else None
    if method is None:
        print("client.py: %s is not in api.proto" % call, file=sys.stderr)
        return 2
    request_class = getattr(api_pb2, method.input_type.name)
    try:
        request = json_format.Parse(request_json, request_class())
    except json_format.ParseError as e:
        print("client.py: %s request %s: %s" % (call, request_json, e), file=sys.stderr)
        return 2

    with grpc.insecure_channel("unix://" + socket) as channel:
        stub = getattr(api_pb2_grpc, service_name + "Stub")(channel)
        try:
            answer = getattr(stub, method_name)(request, timeout=120)
        except grpc.RpcError as e:
            print("%s: %s: %s" % (call, e.code().name, e.details()), file=sys.stderr)
            return 1
    out = json_format.MessageToDict(answer, preserving_proto_field_name=True, including_default_value_fields=True)
    for field in answer.DESCRIPTOR.fields:
        if field.type == field.TYPE_BYTES:
            out[field.name] = getattr(answer, field.name).decode("utf-8", "replace")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
