"""The committed stubs match protos/, and the wire names match PROTOCOLS.md."""

from __future__ import annotations

from omi_build import protogen
from omi_build.runtime.protocol import grpc_predict_v2_pb2 as oip
from omi_build.runtime.protocol import model2_template_pb2 as omi


def test_generated_stubs_are_fresh() -> None:
    rendered = protogen.render()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in protogen.GENERATED.iterdir() if p.is_file()}
    assert rendered == on_disk, "stubs are stale: run `make generate`"


def test_omi_service_has_no_package() -> None:
    service = omi.DESCRIPTOR.services_by_name["ModzyModel"]
    assert service.full_name == "ModzyModel"
    assert [m.name for m in service.methods] == ["Status", "Run", "Shutdown"]


def test_oip_service_and_field_numbers() -> None:
    service = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    request = oip.ModelInferRequest.DESCRIPTOR.fields_by_name
    assert request["raw_input_contents"].number == 7
    assert request["inputs"].number == 5
    run = omi.RunRequest.DESCRIPTOR.fields_by_name
    assert (run["inputs"].number, run["detect_drift"].number, run["explain"].number) == (1, 2, 3)
    contents = oip.InferTensorContents.DESCRIPTOR.fields_by_name
    assert contents["bytes_contents"].number == 8
