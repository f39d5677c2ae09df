"""No physical GPU memory for a layer until it is bound: CUDA virtual memory management.

The seed allocated every layer up front (12.55 GB for LLaMA-2-7B before any weight
arrived). Here one virtual address range is reserved for all decoder layers; parameters
are views into it, so their addresses are fixed from the start (a captured graph can name
them) while only one shared placeholder layer backs the absent ones. Binding layer l maps
its own physical pages under its range (`cuMemCreate` + `cuMemMap` + `cuMemSetAccess`),
then the loader copies into it. Physical memory for layers: one placeholder plus the
bound layers, instead of every layer from the start.

The layout arithmetic is plain Python (tested on CPU); the driver calls use `ctypes` on
`libcuda.so.1` and only run where a GPU is present.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
from torch import nn

from progressive_serve import device_guard
from progressive_serve.config import LlamaShape


def _align(n: int, granularity: int) -> int:
    return (n + granularity - 1) // granularity * granularity


@dataclass(frozen=True)
class LayerSlot:
    """Layer l's byte range inside the arena and each tensor's offset within the arena."""

    layer: int
    start: int
    size: int  # a multiple of the mapping granularity
    tensors: dict[str, tuple[int, tuple[int, ...]]]  # name suffix -> (arena offset, shape)


def plan_layout(shape: LlamaShape, *, element_size: int, granularity: int) -> list[LayerSlot]:
    """Place every layer's tensors back to back, each layer starting on a granularity boundary."""
    slots = []
    start = 0
    for i in range(shape.num_layers):
        off = start
        tensors = {}
        for suffix, shp in shape.layer_tensor_shapes().items():
            n = 1
            for s in shp:
                n *= s
            tensors[suffix] = (off, shp)
            off = _align(off + n * element_size, 256)  # keep every tensor 256-byte aligned
        size = _align(off - start, granularity)
        slots.append(LayerSlot(i, start, size, tensors))
        start += size
    return slots


# -- the driver API, through ctypes ----------------------------------------------------------------
class _Location(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class _AllocFlags(ctypes.Structure):
    _fields_ = [
        ("compressionType", ctypes.c_ubyte),
        ("gpuDirectRDMACapable", ctypes.c_ubyte),
        ("usage", ctypes.c_ushort),
        ("reserved", ctypes.c_ubyte * 4),
    ]


class _AllocProp(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("requestedHandleTypes", ctypes.c_int),
        ("location", _Location),
        ("win32HandleMetaData", ctypes.c_void_p),
        ("allocFlags", _AllocFlags),
    ]


class _AccessDesc(ctypes.Structure):
    _fields_ = [("location", _Location), ("flags", ctypes.c_int)]


_PINNED, _DEVICE, _READWRITE = 1, 1, 3


class Driver:
    """The handful of CUDA driver calls VMM needs; every call checks its result."""

    def __init__(self, device: int) -> None:
        self.lib = ctypes.CDLL("libcuda.so.1")
        self.device = device
        self._check(self.lib.cuInit(0), "cuInit")
        self.ctx = ctypes.c_void_p()
        self._check(
            self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(self.ctx), device), "cuDevicePrimaryCtxRetain"
        )
        self.prop = _AllocProp(type=_PINNED, requestedHandleTypes=0, location=_Location(_DEVICE, device))
        self.make_current()  # the calls that follow on this thread need a current context

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise RuntimeError(f"{what} failed with CUresult {rc}")

    def make_current(self) -> None:
        """Driver calls from the loader thread need the primary context current there."""
        self._check(self.lib.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")

    def granularity(self) -> int:
        g = ctypes.c_size_t()
        self._check(
            self.lib.cuMemGetAllocationGranularity(ctypes.byref(g), ctypes.byref(self.prop), 0), "granularity"
        )
        return g.value

    def reserve(self, size: int) -> int:
        ptr = ctypes.c_uint64()
        self._check(
            self.lib.cuMemAddressReserve(
                ctypes.byref(ptr),
                ctypes.c_size_t(size),
                ctypes.c_size_t(0),
                ctypes.c_uint64(0),
                ctypes.c_uint64(0),
            ),
            "cuMemAddressReserve",
        )
        return ptr.value

    def create(self, size: int) -> int:
        handle = ctypes.c_uint64()
        self._check(
            self.lib.cuMemCreate(
                ctypes.byref(handle), ctypes.c_size_t(size), ctypes.byref(self.prop), ctypes.c_uint64(0)
            ),
            "cuMemCreate",
        )
        return handle.value

    def map_handle(self, ptr: int, size: int, handle: int) -> None:
        self._check(
            self.lib.cuMemMap(
                ctypes.c_uint64(ptr),
                ctypes.c_size_t(size),
                ctypes.c_size_t(0),
                ctypes.c_uint64(handle),
                ctypes.c_uint64(0),
            ),
            "cuMemMap",
        )

    def set_access(self, ptr: int, size: int) -> None:
        desc = _AccessDesc(location=_Location(_DEVICE, self.device), flags=_READWRITE)
        self._check(
            self.lib.cuMemSetAccess(
                ctypes.c_uint64(ptr), ctypes.c_size_t(size), ctypes.byref(desc), ctypes.c_size_t(1)
            ),
            "cuMemSetAccess",
        )

    def unmap(self, ptr: int, size: int) -> None:
        self._check(self.lib.cuMemUnmap(ctypes.c_uint64(ptr), ctypes.c_size_t(size)), "cuMemUnmap")

    def release(self, handle: int) -> None:
        self._check(self.lib.cuMemRelease(ctypes.c_uint64(handle)), "cuMemRelease")

    def free(self, ptr: int, size: int) -> None:
        self._check(
            self.lib.cuMemAddressFree(ctypes.c_uint64(ptr), ctypes.c_size_t(size)), "cuMemAddressFree"
        )


class _DeviceBytes:
    """Exposes a raw device range to `torch.as_tensor` (CUDA array interface, uint8)."""

    def __init__(self, ptr: int, nbytes: int) -> None:
        self.__cuda_array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (ptr, False),
            "version": 3,
            "strides": None,
        }


class LayerArena:
    """Reserved virtual memory for every decoder layer; a layer's own physical memory mapped on bind.

    Until layer l binds, its range is backed by one shared, zeroed *placeholder* allocation
    of one layer's size, mapped under every absent layer's range. That keeps every address
    valid (torch can wrap it, warm-up and the seed's `whole` graph may read it: zeros) at
    the cost of one layer instead of all of them. Binding unmaps the placeholder from that
    range and maps fresh memory there; the addresses never change.
    """

    def __init__(self, shape: LlamaShape, *, dtype: torch.dtype, device: torch.device) -> None:
        self.shape, self.dtype, self.device = shape, dtype, device
        self.driver = Driver(device.index or 0)
        self.element_size = torch.empty(0, dtype=dtype).element_size()
        self.slots = plan_layout(shape, element_size=self.element_size, granularity=self.driver.granularity())
        self.slot_size = self.slots[0].size
        if any(s.size != self.slot_size for s in self.slots):
            raise ValueError("every layer must have the same size to share one placeholder")
        self.size = sum(s.size for s in self.slots)
        self.driver.make_current()
        self.base = self.driver.reserve(self.size)
        self.placeholder = self.driver.create(self.slot_size)
        for slot in self.slots:
            self.driver.map_handle(self.base + slot.start, self.slot_size, self.placeholder)
        self.driver.set_access(self.base, self.size)
        self.bytes = torch.as_tensor(_DeviceBytes(self.base, self.size), device=device)
        self.bytes[: self.slot_size].zero_()  # zeroes the placeholder under every absent layer
        device_guard.synchronize(device)
        self.handles: dict[int, int] = {}

    def attach(self, model: nn.Module) -> None:
        """Point every decoder-layer parameter of `model` at its slot in the arena."""
        for slot in self.slots:
            layer = model.model.layers[slot.layer]
            for suffix, (off, shp) in slot.tensors.items():
                n = 1
                for s in shp:
                    n *= s
                view = self.bytes[off : off + n * self.element_size].view(self.dtype).view(shp)
                mod_path, pname = suffix.rsplit(".", 1)
                setattr(layer.get_submodule(mod_path), pname, nn.Parameter(view, requires_grad=False))

    def mapped_bytes(self) -> int:
        """Physical memory of bound layers (the placeholder, one layer, comes on top)."""
        return len(self.handles) * self.slot_size

    def map_layer(self, layer: int | None) -> None:
        """Give layer `layer` its own physical memory under its fixed addresses (idempotent).

        The device is synchronised first: no kernel may be reading the placeholder under
        this range while it is swapped (in `per_layer` mode none does; in `whole` mode the
        captured graph would). The sync and the remap run under the device lock
        (`device_guard`), so neither meets another engine's capture.
        """
        if layer is None or layer in self.handles:
            return
        ptr = self.base + self.slots[layer].start
        self.driver.make_current()
        with device_guard.exclusive():
            device_guard.synchronize(self.device)
            self.driver.unmap(ptr, self.slot_size)
            handle = self.driver.create(self.slot_size)
            self.driver.map_handle(ptr, self.slot_size, handle)
            self.driver.set_access(ptr, self.slot_size)
        self.handles[layer] = handle

    def release(self) -> None:
        self.driver.make_current()
        with device_guard.exclusive():
            device_guard.synchronize(self.device)
            self.bytes = None
            for slot in self.slots:
                self.driver.unmap(self.base + slot.start, self.slot_size)
            for handle in [*self.handles.values(), self.placeholder]:
                self.driver.release(handle)
            self.handles.clear()
            self.driver.free(self.base, self.size)
