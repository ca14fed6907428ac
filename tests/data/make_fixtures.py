#!/usr/bin/python3
"""Regenerates the tiny committed fixtures in tests/data/good and tests/data/bad.

Development aid only: the test suite reads the committed files and never runs this script.
The npz files are written with numpy and Python's zipfile (an independent writer from the C++
test helpers); the truncated HDF5 file with h5py. Debian 12: python3-numpy python3-h5py.
Usage: /usr/bin/python3 tests/data/make_fixtures.py   (from anywhere)
Each bad file's expected error is listed in tests/data/bad_files.txt (kept by hand).
"""
import gzip
import io
import os
import struct
import zipfile

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GOOD = os.path.join(HERE, "good")
BAD = os.path.join(HERE, "bad")


def pixel(i, k):
    """Same pattern as tests/datasets/helpers.hpp pixel(i, k)."""
    return (i * 37 + k * 3 + 1) % 256


def pixels(n, dim):
    return bytes(pixel(i, k) for i in range(n) for k in range(dim))


def idx(dims, data, type_byte=0x08, magic01=b"\x00\x00"):
    return magic01 + bytes([type_byte, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


def write(folder, name, data):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def gz(data):
    return gzip.compress(data, mtime=0)


def npy(array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_fortran(array):
    # write_array writes a 1-column or 1-row array in C order; force the flag in the header.
    raw = npy(array)
    return raw.replace(b"'fortran_order': False", b"'fortran_order': True ")


def zip_bytes(members, method=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        for name, data in members:
            z.writestr(name, data)
    return bytearray(buf.getvalue())


def npz8(data, labels, method=zipfile.ZIP_DEFLATED):
    return zip_bytes([("data.npy", npy(data)), ("labels.npy", npy(labels))], method)


def images8(n):
    return np.frombuffer(pixels(n, 192), np.uint8).reshape(n, 192)


def main():
    # ---- good ----
    write(GOOD, "images-3x4x4.idx3", idx([3, 4, 4], pixels(3, 16)))
    write(GOOD, "labels-3.idx1", idx([3], bytes([7, 0, 9])))
    # np.savez_compressed as the ImageNet files are distributed (8x8 images keep it tiny):
    # labels 1-based int64, a mean array that the loader ignores.
    path = os.path.join(GOOD, "imagenet8-numpy.npz")
    np.savez_compressed(path, data=images8(2), labels=np.array([1, 1000], np.int64),
                        mean=np.zeros(192, np.float64))

    # ---- bad: IDX images (paired with good/labels-3.idx1) ----
    write(BAD, "idx_bad_magic.idx3", idx([3, 4, 4], pixels(3, 16), magic01=b"\x12\x34"))
    write(BAD, "idx_labels_as_images.idx3", idx([3], bytes([1, 2, 3])))
    write(BAD, "idx_float_type.idx3", idx([3, 4, 4], pixels(3, 16), type_byte=0x0D))
    write(BAD, "idx_truncated.idx3", idx([3, 4, 4], pixels(3, 16)[:40]))
    write(BAD, "idx_trailing_bytes.idx3", idx([3, 4, 4], pixels(3, 16) + b"\x00" * 5))
    write(BAD, "idx_huge_count.idx3", idx([0xFFFFFFFF, 28, 28], pixels(3, 16)))
    write(BAD, "idx_huge_side.idx3", idx([3, 100000, 100000], pixels(3, 16)))
    write(BAD, "idx_short_header.idx3", idx([3, 4, 4], b"")[:9])
    write(BAD, "idx_empty.idx3", idx([0, 4, 4], b""))
    big = gz(idx([3, 4, 4], bytes(range(48))))
    write(BAD, "idx_truncated.idx3.gz", big[: len(big) - 12])
    crc = bytearray(gz(idx([3, 4, 4], pixels(3, 16))))
    crc[-8] ^= 0xFF  # the gzip trailer's CRC-32
    write(BAD, "idx_bad_crc.idx3.gz", bytes(crc))
    # ---- bad: IDX labels (paired with good/images-3x4x4.idx3) ----
    write(BAD, "idx_label_range.idx1", idx([3], bytes([1, 10, 2])))
    write(BAD, "idx_count_mismatch.idx1", idx([2], bytes([1, 2])))
    write(BAD, "idx_empty_file.idx1", b"")

    # ---- bad: CIFAR ----
    write(BAD, "cifar10_not_multiple.bin", bytes(100))
    write(BAD, "cifar100_not_multiple.bin", bytes(300))
    write(BAD, "cifar10_empty.bin", b"")

    # ---- bad: ImageNet npz, read with 8x8 images ----
    write(BAD, "npz_not_zip.npz", b"this is not a zip archive\n" * 4)
    good = npz8(images8(1), np.array([5], np.int64))
    write(BAD, "npz_truncated.npz", bytes(good[: len(good) // 2]))
    zip64 = bytearray(good)
    zip64[-22 + 10: -22 + 12] = b"\xff\xff"  # total entries 0xFFFF: "see the Zip64 record"
    write(BAD, "npz_zip64.npz", bytes(zip64))
    write(BAD, "npz_label0.npz", bytes(npz8(images8(2), np.array([3, 0], np.int64))))
    write(BAD, "npz_label1001.npz", bytes(npz8(images8(1), np.array([1001], np.int32))))
    stored = npz8(images8(1), np.array([5], np.int64), zipfile.ZIP_STORED)
    at = stored.index(b"\x93NUMPY") + 128 + 50  # a pixel byte of data.npy (header padded to 128)
    stored[at] ^= 0x01
    write(BAD, "npz_bad_crc.npz", bytes(stored))
    write(BAD, "npz_shape.npz", bytes(npz8(np.zeros((1, 100), np.uint8), np.array([5], np.int64))))
    write(BAD, "npz_count_mismatch.npz", bytes(npz8(images8(1), np.array([5, 6], np.int64))))
    write(BAD, "npz_no_labels.npz", bytes(zip_bytes([("data.npy", npy(images8(1)))])))
    write(BAD, "npz_fortran.npz", bytes(zip_bytes([("data.npy", npy_fortran(images8(1))),
                                                   ("labels.npy", npy(np.array([5], np.int64)))])))
    write(BAD, "npz_float_labels.npz", bytes(npz8(images8(1), np.array([5.0]))))
    bz = bytearray(stored)
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):  # method field in local and central headers
        pos = 0
        while (pos := bz.find(sig, pos)) >= 0:
            bz[pos + (8 if sig == b"PK\x03\x04" else 10)] = 12
            pos += 4
    write(BAD, "npz_bzip2_method.npz", bytes(bz))
    deflated = npz8(images8(1), np.array([5], np.int64))
    data_start = 30 + len("data.npy") + struct.unpack("<H", deflated[28:30])[0]
    deflated[data_start] = 0xFF  # BFINAL=1, BTYPE=11: reserved block type
    write(BAD, "npz_corrupt_deflate.npz", bytes(deflated))

    # ---- bad: HDF5 ----
    write(BAD, "h5_not_hdf5.h5", b"not an HDF5 file\n" * 8)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("images", data=np.zeros((1, 1, 2, 2), np.uint8))
        f.create_dataset("labels", data=np.zeros(1, np.int32))
        f.attrs["classes"] = np.int32(10)
    write(BAD, "h5_truncated.h5", buf.getvalue()[:400])


if __name__ == "__main__":
    main()
