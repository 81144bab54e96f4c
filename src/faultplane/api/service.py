"""The faultplane.v1.FaultService servicer: validation and authorisation at the edge,
then the scheduler. One class per concern, composed here."""

from __future__ import annotations

from collections.abc import Collection

from faultplane.api.gate import Gate
from faultplane.api.governance import GovernanceMethods
from faultplane.api.injections import InjectionMethods
from faultplane.api.observe import ObserveMethods
from faultplane.api.schedules import ScheduleMethods
from faultplane.api.scheduling import SchedulingMethods
from faultplane.delivery.plane import FaultPlane
from faultplane.lifecycle.journal import Journal
from faultplane.lifecycle.preflight import Preflight
from faultplane.lifecycle.scheduler import Scheduler
from faultplane.model.mesh import Mesh
from faultplane.store import Store
from faultplane.v1 import faultplane_pb2_grpc
from faultplane.xds.registry import SidecarRegistry


class FaultService(
    InjectionMethods,
    GovernanceMethods,
    ObserveMethods,
    SchedulingMethods,
    ScheduleMethods,
    faultplane_pb2_grpc.FaultServiceServicer,
):
    def __init__(
        self,
        gate: Gate,
        registry: SidecarRegistry,
        scheduler: Scheduler,
        mesh: Mesh | None,
        store: Store,
        journal: Journal,
        plane: FaultPlane,
        preflight: Preflight | None = None,
    ) -> None:
        self.gate = gate
        self.plane = plane
        self.journal = journal
        self.registry = registry
        self.scheduler = scheduler
        self.mesh = mesh
        self.store = store
        self.preflight = preflight
        # Without a catalogue no SLO can be read, so every injection is refused.
        self.slos: Collection[str] = preflight.catalogue if preflight else ()
