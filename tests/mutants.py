"""Deliberate small breakages of h5store, each of which some test must catch.

    python tests/mutants.py                 # every mutant, with the tests of this checkout
    python tests/mutants.py --jobs 2        # two at a time (what CI runs: .ci/run)
    python tests/mutants.py --tests a3b28f7 # the same mutants against an older revision's tests
    python tests/mutants.py index-map crc-encoded   # some of them

Each mutant is a few exact text replacements in the package and the tests that should catch
it: whole test files, or single tests (``file.py::test_name``, which keeps the run within
CI's budget). The script copies h5store/ and the tests into a temporary folder per job,
applies one mutant there (the checkout is never touched), runs its tests and prints "caught"
(a test failed) or "MISSED" (every test passed: the breakage would ship). A mutant whose text
no longer matches the code prints "stale", one whose tests cannot run (the mutated package
does not import, a named test is gone) "INVALID". Any of the three makes the exit status 1, so
CI fails loudly instead of dropping a guard; tests/test_mutants_apply.py checks every anchor
(and that each mutated module still compiles) in milliseconds on each test run. Not
collected by pytest (no ``test_`` prefix). docs/mutation.md lists what the mutants guard and
what mutmut found besides.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    why: str  # the behaviour that breaks
    edits: tuple[tuple[str, str, str], ...]  # (path under the checkout, old text, new text)
    tests: tuple[str, ...]  # under tests/: files or file.py::test that should catch it


MUTANTS = [
    Mutant(
        "index-map",
        "(a) ids added after a lookup built the id map are not entered in it",
        (
            (
                "h5store/_index.py",
                "            self._row_of_id.update(zip(ids.tolist(), range(start, start + k)))",
                "            pass",
            ),
        ),
        ("test_ids.py::test_ids_added_after_a_lookup_are_found_read_and_refused_again",),
    ),
    Mutant(
        "duplicate-ids",
        "(a) an id already in a store with non-consecutive ids is accepted again",
        (
            (
                "h5store/_index.py",
                "        return np.array([i for i in ids.tolist() if i in lookup], dtype=np.int64)",
                "        return np.zeros(0, dtype=np.int64)",
            ),
        ),
        ("test_ids.py::test_ids_added_after_a_lookup_are_found_read_and_refused_again",),
    ),
    Mutant(
        "crc-add-batch",
        "(b) add/add_batch record the CRC of other bytes than they store",
        (
            (
                "h5store/_ingest.py",
                "    return payload, crc32(payload)",
                "    return payload, crc32(payload[:-1])",
            ),
        ),
        ("test_ingest_crc.py::test_add_and_add_batch_record_the_crc_of_the_stored_bytes",),
    ),
    Mutant(
        "crc-encoded",
        "(b) add_encoded/add_encoded_batch/import record the CRC of other bytes",
        (
            (
                "h5store/_ingest.py",
                "zip(payloads, map(crc32, payloads))",
                "zip(payloads, (crc32(p[1:]) for p in payloads))",
            ),
        ),
        (
            "test_ingest_crc.py::test_add_encoded_and_add_encoded_batch_record_the_crc_of_the_stored_bytes",
            "test_ingest_crc.py::test_import_records_the_crc_of_the_stored_bytes",
        ),
    ),
    Mutant(
        "crc-encoded-one",
        "(b) add_encoded (one image per call, the group commit's fast path) records the CRC of "
        "other bytes",
        (
            (
                "h5store/_ingest.py",
                "self._singles.encoded_already(data, crc32(data))",
                "self._singles.encoded_already(data, crc32(data[1:]))",
            ),
        ),
        (
            "test_ingest_crc.py::test_add_encoded_and_add_encoded_batch_record_the_crc_of_the_stored_bytes",
        ),
    ),
    Mutant(
        "pending-id-reused",
        "(c) an id already pending in the group is accepted again",
        (
            (
                "h5store/_ingest.py",
                "self.index.find(image_id) >= 0 or image_id in self._pending_ids",
                "self.index.find(image_id) >= 0",
            ),
        ),
        ("test_group_commit.py::test_bad_input_raises_in_its_call_and_leaves_nothing_pending",),
    ),
    Mutant(
        "group-bound-ignored",
        "(c) pending images are never committed by the group bound, only at commit or close",
        (
            (
                "h5store/_ingest.py",
                "        return self._pending_n > 0 and (",
                "        return False and (",
            ),
        ),
        ("test_group_commit.py::test_a_group_is_committed_when_it_reaches_its_bound",),
    ),
    Mutant(
        "uncommitted-batch-kept",
        "(c) rows after the last commit flag are taken as committed",
        (
            (
                "h5store/_recovery.py",
                "        return n, tail[: int(ends[-1]) + 1]",
                "        return n, tail",
            ),
            (
                "h5store/_recovery.py",
                "    return _last_nonzero(index_batch_end[:n]) + 1, tail[:0]",
                "    return n, tail",
            ),
        ),
        (
            "test_commit_replay.py::test_every_prefix_of_a_commit_recovers_to_before_or_after_the_batch[tail-overflow]",
        ),
    ),
    Mutant(
        "tail-copies-kept",
        "(c) tail rows already moved into /index are read twice",
        (
            (
                "h5store/_recovery.py",
                '            tail = tail[~np.isin(tail["id"], index_ids)]',
                "            pass",
            ),
        ),
        ("test_guards.py::test_rows_a_killed_seal_left_in_both_tables_are_read_once",),
    ),
    Mutant(
        "offsets-never-rebuilt",
        "(d) a file rewritten by h5repack is read through stale chunk offsets",
        (
            (
                "h5store/_offsets.py",
                "    if rows_intact(index, source, sorted(rows)):\n        return",
                "    if True:\n        return",
            ),
        ),
        (
            "test_offset_cache.py::test_a_store_rewritten_by_h5repack_reads_the_original_pixels",
            "test_offset_cache.py::test_offsets_past_the_files_end_are_rebuilt_from_hdf5",
        ),
    ),
    Mutant(
        "offsets-rebuilt-in-memory-only",
        "(d) rebuilt offsets reach the read columns but not the rows verify() checks",
        (("h5store/_index.py", '        self._rows["offset"][rows] = offsets\n', ""),),
        ("test_offset_cache.py::test_a_store_rewritten_by_h5repack_reads_the_original_pixels",),
    ),
    Mutant(
        "rewritten-positions-trusted",
        "(d) a chunk replaced in place (a failed batch's or a dead writer's position) gets the "
        "offset the file-end marks predict",
        (
            (
                "h5store/_file.py",
                "        doubtful = (gaps != 0) | np.add.reduceat(rewritten, sample_starts)"
                ".astype(bool)\n",
                "        doubtful = gaps != 0\n",
            ),
        ),
        (
            "test_offset_cache.py::test_chunks_are_located_from_the_file_end_marks_reading_back_only_where_it_grew_more",
        ),
    ),
    Mutant(
        "gap-window-not-searched",
        "(d) a chunk between two gaps of one sample costs HDF5's index lookup (1 ms)",
        (
            (
                "h5store/_file.py",
                "                    found = window.find(payload)\n",
                "                    found = -1\n",
            ),
        ),
        (
            "test_offset_cache.py::test_chunks_are_located_from_the_file_end_marks_reading_back_only_where_it_grew_more",
        ),
    ),
    Mutant(
        "stack-copy-bare",
        "(f) a stack copied for a class made in the same batch lacks the attributes and filter "
        "of a stack made on its own",
        (
            (
                "h5store/format.py",
                "        stack = links.copy(f, template)\n",
                "        stack = group.create_dataset(None, shape=template.shape, chunks="
                "template.chunks, maxshape=template.maxshape, dtype=template.dtype)\n",
            ),
        ),
        (
            "test_format.py::test_index_labels_and_attributes_read_with_plain_h5py",
            "test_format.py::test_objects_copied_for_classes_made_together_equal_objects_made_one_by_one",
        ),
    ),
    Mutant(
        "preview-copy-keeps-pixels",
        "(f) a class preview copied from another class's shows that class's pictures",
        (
            (
                "h5store/format.py",
                "        data.id.write_direct_chunk((0,) * sheet.ndim, "
                "isal_zlib.compress(sheet.tobytes(), 1))\n",
                "",
            ),
        ),
        (
            "test_format.py::test_objects_copied_for_classes_made_together_equal_objects_made_one_by_one",
        ),
    ),
    Mutant(
        "class-copy-keeps-label",
        "(f) a class group copied from another class's keeps that class's label and id",
        (
            (
                "h5store/format.py",
                '        _rewrite_attrs(group, {"label": label, "class_id": '
                "np.uint32(class_id)})\n",
                "",
            ),
        ),
        (
            "test_format.py::test_plain_h5py_with_hdf5plugin_reads_blosc2_and_raw_stacks",
            "test_format.py::test_objects_copied_for_classes_made_together_equal_objects_made_one_by_one",
        ),
    ),
    Mutant(
        "verify-ignores-offsets",
        "(d) verify() does not compare cached offsets with HDF5's chunk index",
        (
            (
                "h5store/_offsets.py",
                "            if location is None or location != "
                '(int(row["offset"]), int(row["nbytes"])):',
                "            if location is None:",
            ),
        ),
        ("test_offset_cache.py::test_a_wrong_offset_in_the_index_is_reported_as_misplaced",),
    ),
    Mutant(
        "dataset-id-single",
        '(e) ImageStoreDataset(target="id")[k] returns the position k, not the id',
        (
            (
                "h5store/torch.py",
                "            return tensor, int(self.ids[k])",
                "            return tensor, k",
            ),
        ),
        ("test_torch_inputs.py::test_target_id_gives_ids_on_the_single_item_path",),
    ),
    Mutant(
        "dataset-id-batch",
        '(e) batches of ImageStoreDataset(target="id") carry positions, not ids',
        (
            (
                "h5store/torch.py",
                'np.ascontiguousarray(self.ids[ks] if self.target == "id" else self.targets[ks])',
                'np.ascontiguousarray(np.asarray(ks) if self.target == "id" else self.targets[ks])',
            ),
        ),
        ("test_torch.py::test_loader_workers_reuse_blocks_only_once_let_go",),
    ),
    Mutant(
        "torch-chw",
        "(f) (C, H, W) torch tensors are stored as (W, H, C)",
        (
            (
                "h5store/_inputs.py",
                "            arr = arr.transpose(1, 2, 0)",
                "            arr = arr.transpose(2, 1, 0)",
            ),
        ),
        (
            "test_torch_inputs.py::test_channels_first_tensors_with_h_not_w_are_stored_as_the_hwc_original",
        ),
    ),
    Mutant(
        "export-escapes",
        "(g) a label '..' exports into the folder above the export folder",
        (
            ("h5store/format.py", '(ch == "." and i == 0)', "False"),
            (
                "h5store/folders.py",
                "        or os.path.commonpath([root, os.path.realpath(folder)]) != root\n",
                "        or False\n",
            ),
        ),
        ("test_folders_cli.py::test_export_stays_inside_the_folder_and_import_restores_labels",),
    ),
    Mutant(
        "lz4-reversed",
        "viewers: lz4 stores the pixel bytes reversed (h5dump and h5store agree on wrong pixels)",
        (
            (
                "h5store/codecs/lz4.py",
                "        return encoded(imagecodecs.lz4h5_encode(data))",
                "        return encoded(imagecodecs.lz4h5_encode(bytes(data)[::-1]))",
            ),
        ),
        ("test_viewers.py::test_a_class_per_codec_round_trips",),
    ),
    Mutant(
        "preview-order",
        "previews: the contact sheet shows its images in the wrong order",
        (
            (
                "h5store/_write.py",
                "                [tiles[i] for i in shown.tolist()], fmt.PREVIEW_SIDE",
                "                [tiles[i] for i in shown.tolist()[::-1]], fmt.PREVIEW_SIDE",
            ),
        ),
        ("test_previews.py::test_preview_follows_deletions_and_can_be_rebuilt",),
    ),
    Mutant(
        "get-batch-out-rgb",
        "get_batch(out=) swaps the colour channels of JPEG images (and nothing else does)",
        (
            (
                "h5store/codecs/jpeg.py",
                "                return decode(data, out=np.empty(shape, _UINT8) if out is None "
                "else out)\n",
                "                image = decode(data, out=np.empty(shape, _UINT8) if out is None "
                "else out)\n"
                "                if out is not None and out.ndim == 3:\n"
                "                    out[...] = out[..., ::-1]\n"
                "                return image\n",
            ),
        ),
        ("test_roundtrip.py::test_get_batch_decodes_into_a_given_array",),
    ),
    Mutant(
        "stack-name",
        "format: stacks are named differently (writer and reader agree; old files break)",
        (
            (
                "h5store/format.py",
                '    return f"{height}x{width}x{channels}_{dtype}"',
                '    return f"{height}x{width}x{channels}-{dtype}"',
            ),
        ),
        ("test_format.py::test_hdf5_1_10_tools_read_structure_attributes_and_index",),
    ),
    Mutant(
        "index-score-f8",
        "format: the index stores scores as float64 (writer and reader agree; old files differ)",
        (("h5store/format.py", '        ("score", "<f4"),', '        ("score", "<f8"),'),),
        (
            "test_golden.py::test_golden_sources_are_checked_from_format_1_1_on",
            "test_format.py",
        ),
    ),
    Mutant(
        "source-check-skipped",
        "sources: reads ignore /source_crc32 (a zeroed /sources chunk reads as no source)",
        (
            (
                "h5store/_sources.py",
                "    bad = np.flatnonzero((want != 0) & (got != want))",
                "    bad = np.flatnonzero(want != want)",
            ),
        ),
        ("test_damage_guards.py::test_a_zeroed_sources_chunk_is_an_error_not_no_source",),
    ),
    Mutant(
        "sources-header-damage-hidden",
        "sources: a /sources whose header cannot be read is taken for no /sources (h5py's get)",
        (
            (
                "h5store/_sources.py",
                "    if SOURCES not in f:\n        return None\n    ds = f[SOURCES]\n",
                "    ds = f.get(SOURCES)\n    if ds is None:\n        return None\n",
            ),
        ),
        (
            "test_damage_guards.py::test_a_damaged_header_of_the_sources_or_their_checks_is_an_error",
        ),
    ),
    Mutant(
        "heap-walk-skipped",
        "sources: heap collections are handed to HDF5 unchecked (a zeroed object header hangs)",
        (
            (
                "h5store/_sources.py",
                "    for address in heaps:\n"
                "        check_heap_collection("
                "read_bytes, address, file_size, path, checked_heaps)\n",
                "",
            ),
        ),
        ("test_damage_guards.py::test_a_zeroed_object_header_in_the_heap_is_an_error_not_a_hang",),
    ),
    Mutant(
        "index-of-fixed-size",
        "(d) /index with /index_tail's header (same type, fixed size) reads as an empty store",
        (
            (
                "h5store/format.py",
                "    if ds.maxshape != (None,):\n        # /index_tail's header",
                "    if False:\n        # /index_tail's header",
            ),
        ),
        ("test_damage_guards.py::test_the_tails_header_copied_over_the_index_is_named",),
    ),
    Mutant(
        "open-runtime-error",
        "(d) HDF5 failing to decode the superblock escapes as a RuntimeError",
        (
            (
                "h5store/_file.py",
                "    except RuntimeError as exc:\n        # HDF5 failing to decode",
                "    except ZeroDivisionError as exc:\n        # HDF5 failing to decode",
            ),
        ),
        ("test_damage_guards.py::test_an_undecodable_superblock_is_a_format_error",),
    ),
    Mutant(
        "sources-inherited",
        "sources: a batch without sources takes those a dead writer's batch left in its rows",
        (
            (
                "h5store/_write.py",
                "        with_scores = batch.vectors is not None or fmt.SCORES in f\n"
                "        with_sources = batch.sources is not None or fmt.SOURCES in f\n",
                "        with_scores = batch.vectors is not None\n"
                "        with_sources = batch.sources is not None\n",
            ),
        ),
        (
            "test_commit_replay.py::test_every_prefix_of_a_commit_recovers_to_before_or_after_the_batch[group-of-calls]",
        ),
    ),
    Mutant(
        "sources-after-rows",
        "sources: written in the index rows' flush, so a kill can commit rows before them",
        (
            (
                "h5store/_write.py",
                "        # first (a kill in between committed images whose sources read as none).\n"
                "        w.flush()\n",
                "        # first (a kill in between committed images whose sources read as "
                "none).\n",
            ),
        ),
        (
            "test_commit_replay.py::test_every_prefix_of_a_commit_recovers_to_before_or_after_the_batch[existing-stack]",
        ),
    ),
    Mutant(
        "stale-source-references",
        "sources: references a dead writer left are overwritten through HDF5, which follows them",
        (
            (
                "h5store/_sources.py",
                "        if raw is not None and any(raw[lo:hi]):",
                "        if False:",
            ),
        ),
        (
            "test_commit_replay.py::test_every_prefix_of_a_commit_recovers_to_before_or_after_the_batch[group-of-calls]",
        ),
    ),
    Mutant(
        "earlier-rows-unchecked",
        "sources: rows stored before /sources existed get no check",
        (
            (
                "h5store/_write.py",
                "                if first_sources and n0:",
                "                if False:",
            ),
        ),
        (
            "test_damage_guards.py::test_rows_stored_before_the_first_source_are_checked_as_having_none",
        ),
    ),
    Mutant(
        "root-links-default",
        "format: a new file's root group has HDF5's default room (8 compact links, not 9)",
        (
            (
                "h5store/_file.py",
                "    _libhdf5.reserve_links(fcpl, fmt.ROOT_LINKS_RESERVED, "
                "fmt.RESERVED_NAME_BYTES)\n",
                "",
            ),
        ),
        (
            "test_format.py::test_source_checks_are_the_documented_crc32",
            "test_format.py::test_a_new_files_root_group_keeps_every_link_compact",
        ),
    ),
    Mutant(
        "plugin-codecs-ignored",
        "codec plugins: entry points are never consulted",
        (
            (
                "h5store/codecs/registry.py",
                "    for entry in entry_points(group=ENTRY_POINT_GROUP, name=codec_id):",
                "    for entry in ():",
            ),
        ),
        ("test_codec_plugin.py::test_store_written_and_read_with_a_plugin_codec_nobody_imported",),
    ),
    Mutant(
        "bgr-one-image",
        "(issue 23) add(image, channel_order='bgr') stores the BGR array as if RGB",
        (
            (
                "h5store/_ingest.py",
                "        if bgr and image.ndim == 3:  # stored RGB, as add_batch does",
                "        if False:",
            ),
        ),
        ("test_channel_order.py::test_opencv_round_trip_without_a_swap",),
    ),
    Mutant(
        "one-image-not-copied",
        "(issue 20) add keeps a reference to the caller's array, encoded after the call "
        "returns: a refilled buffer changes what is stored",
        (
            (
                "h5store/_ingest.py",
                "self._to_encode.append((codec, self._scratch.copy_of(image, bgr)))",
                "self._to_encode.append((codec, image))",
            ),
        ),
        ("test_group_commit.py::test_the_caller_may_reuse_its_arrays_as_soon_as_an_add_returns",),
    ),
    Mutant(
        "bgr-reads",
        "(issue 23) a bgr handle's get_batch returns RGB",
        (
            (
                "h5store/_read.py",
                "        return [_inputs.swap_rb(image) for image in images] if bgr else images",
                "        return images",
            ),
        ),
        ("test_channel_order.py::test_opencv_round_trip_without_a_swap",),
    ),
    Mutant(
        "argmax-one-image",
        "(issue 23) add() accepts a label that is not its score vector's argmax",
        (
            (
                "h5store/_ingest.py",
                "                if self.argmax_labels:\n                    _check_argmax(",
                "                if False:\n                    _check_argmax(",
            ),
        ),
        (
            "test_bad_input.py::test_a_label_that_is_not_its_vectors_argmax_is_refused_naming_the_image",
        ),
    ),
    Mutant(
        "sql-store-name",
        "(issue 23) SQL rows name the store without its directory",
        (
            (
                "h5store/sql.py",
                "        name = os.path.abspath(member.path)",
                "        name = os.path.basename(member.path)",
            ),
        ),
        ("test_sql.py::test_every_live_image_is_one_row_and_vectors_are_long_form",),
    ),
    Mutant(
        "exif-comment-type",
        "(issue 23) UserComment written as BYTE (int8u), as piexif and exiftool -validate refuse",
        (
            (
                "h5store/codecs/_embed.py",
                "        (0x9286, _UNDEFINED, _USER_COMMENT_ASCII",
                "        (0x9286, 1, _USER_COMMENT_ASCII",
            ),
            (
                "h5store/codecs/_embed.py",
                "_TYPE_SIZE = {_ASCII: 1,",
                "_TYPE_SIZE = {1: 1, _ASCII: 1,",
            ),
        ),
        ("test_export_metadata.py::test_embedded_metadata_round_trips_for_any_label",),
    ),
    # --- issue 21 item 4: the commit protocol, recovery and the read path's CRC checks ---
    Mutant(
        "crc-read-item",
        "(b) store[id] decodes a payload without checking its CRC-32",
        (
            (
                "h5store/_read.py",
                "        if self.verify and crc32(payload) != index.crcs[row]:\n"
                "            raise self.damaged(row)\n"
                "        try:\n",
                "        try:\n",
            ),
        ),
        ("test_checksums.py::test_every_store_read_path_refuses_the_damaged_image",),
    ),
    Mutant(
        "crc-read-batch",
        "(b) get_batch (and the sharded view, the Dataset) decode payloads without their CRC-32",
        (
            (
                "h5store/_read.py",
                "        if self.verify and crc32(payload) != index.crcs[row]:\n"
                "            raise self.damaged(row)\n"
                "        return payload\n\n    def damaged",
                "        return payload\n\n    def damaged",
            ),
        ),
        ("test_checksums.py::test_every_store_read_path_refuses_the_damaged_image",),
    ),
    Mutant(
        "crc-read-remote-batch",
        "(b) a batch read over the network (one round of ranged reads) is decoded without the "
        "payloads' CRC-32",
        (
            (
                "h5store/_read.py",
                "        if self.verify:\n            for row, payload in zip(row_list, got):\n",
                "        if False:\n            for row, payload in zip(row_list, got):\n",
            ),
        ),
        ("test_remote.py::test_a_batch_read_by_url_checks_every_payloads_crc",),
    ),
    Mutant(
        "remote-waits-inside-hdf5",
        "(b) a thread inside HDF5 (holding h5py's lock) waits on other threads for its bytes, "
        "which can be finalizing an h5py object and waiting for that lock",
        (
            (
                "h5store/_remote.py",
                "    if len(calls) <= 1 or _holding_hdf5_lock():\n",
                "    if len(calls) <= 1:\n",
            ),
        ),
        ("test_remote.py::test_a_thread_holding_h5pys_lock_sends_every_request_itself",),
    ),
    Mutant(
        "crc-read-encoded",
        "(b) get_encoded returns a payload without checking its CRC-32",
        (
            (
                "h5store/_read.py",
                "            payload = mapped.map[offset:end]\n"
                "        if self.verify and crc32(payload) != index.crcs[row]:\n",
                "            payload = mapped.map[offset:end]\n        if False:\n",
            ),
        ),
        ("test_checksums.py::test_every_store_read_path_refuses_the_damaged_image",),
    ),
    Mutant(
        "commit-flag-dropped",
        "(c) a batch's last index row lacks the commit flag, so its rows never count as committed",
        (("h5store/_write.py", '        rows["batch_end"][-1] = 1\n', ""),),
        (
            "test_reliability.py::test_kill_9_during_ingest_loses_at_most_what_was_not_committed[0-call]",
        ),
    ),
    Mutant(
        "commit-flag-first-row",
        "(c) the commit flag is on a batch's first row: a kill commits the batch's head only",
        (
            (
                "h5store/_write.py",
                '        rows["batch_end"][-1] = 1\n',
                '        rows["batch_end"][0] = 1\n',
            ),
        ),
        ("test_guards.py::test_automatic_ids_continue_after_a_batch_of_explicit_ids",),
    ),
    Mutant(
        "tail-rows-not-flushed",
        "(c) rows appended to /index_tail wait in HDF5's cache: a kill after commit loses them",
        (
            (
                "h5store/_file.py",
                "            self._tail_used += len(rows)\n            f.flush()\n",
                "            self._tail_used += len(rows)\n",
            ),
        ),
        ("test_reliability.py::test_kill_9_during_ingest_loses_at_most_what_was_not_committed",),
    ),
    Mutant(
        "delete-not-flushed",
        "(c) a deletion waits in HDF5's cache: killed after delete() returned, the image is back",
        (
            (
                "h5store/_write.py",
                "            w.write_row(r, row)\n        w.flush()\n",
                "            w.write_row(r, row)\n",
            ),
        ),
        ("test_guards.py::test_a_deletion_survives_kill_9_right_after_delete_returns",),
    ),
    Mutant(
        "full-tail-not-copied",
        "(recovery) a full tail a dead writer had not moved to /index is dropped on reopen",
        (
            (
                "h5store/_file.py",
                "                index[full - capacity : full] = "
                "committed[full - capacity : full]\n",
                "",
            ),
        ),
        ("test_guards.py::test_a_full_tail_left_by_a_killed_writer_moves_to_the_index_on_reopen",),
    ),
    Mutant(
        "unreferenced-stacks-kept",
        "(recovery) /stacks rows a dead writer added past the last committed image are kept",
        (
            (
                "h5store/_recovery.py",
                "    if table.shape[0] > keep:\n        table.resize(keep, axis=0)\n",
                "",
            ),
        ),
        ("test_guards.py::test_a_stack_made_by_a_batch_that_never_committed_is_removed",),
    ),
    Mutant(
        "fill-rows-committed",
        "(recovery) rows after a hole in /index (a chunk never flushed) are taken as committed",
        (
            (
                "h5store/_recovery.py",
                "        n, tail = first_empty, tail_rows[:0]\n",
                "        n, tail = len(index_nbytes), tail_rows[:0]\n",
            ),
        ),
        (
            "test_guards.py::test_rows_after_a_hole_in_the_index_never_count_even_with_a_commit_flag",
        ),
    ),
    # --- found by mutmut (docs/mutation.md), kept here so that CI keeps checking them ---
    Mutant(
        "offset-past-end-intact",
        "(d) a cached offset past the end of the file counts as intact, so it is never rebuilt",
        (
            (
                "h5store/_offsets.py",
                "        return False\n    payloads = source.read_ranges(",
                "        return True\n    payloads = source.read_ranges(",
            ),
        ),
        ("test_offset_cache.py::test_offsets_past_the_files_end_are_rebuilt_from_hdf5",),
    ),
    Mutant(
        "stack-kind-unchecked",
        "(d) a stack that is not a chunked dataset escapes verify() as AttributeError/TypeError",
        (
            (
                "h5store/_offsets.py",
                "        if not isinstance(ds, h5py.Dataset) or ds.chunks is None or "
                "ds.is_virtual:\n",
                "        if False:\n",
            ),
        ),
        ("test_offset_cache.py::test_a_stack_that_is_not_a_chunked_dataset_is_named_by_verify",),
    ),
    Mutant(
        "dense-ids-shifted",
        "(a) ids that run consecutively from a start other than 0 map to the wrong rows in "
        "get_batch",
        (
            (
                "h5store/_index.py",
                "            rows = ids - self._dense_start\n",
                "            rows = ids + self._dense_start\n",
            ),
        ),
        ("test_ids.py::test_the_index_answers_as_a_dict_of_its_ids_would",),
    ),
    Mutant(
        "live-count-reset",
        "(a) a second delete() resets the count of deleted images: len(store) is wrong",
        (
            (
                "h5store/_index.py",
                "        self._deleted += int(",
                "        self._deleted = int(",
            ),
        ),
        ("test_ids.py::test_the_index_answers_as_a_dict_of_its_ids_would",),
    ),
    Mutant(
        "index-blocks-not-joined",
        "(a) blocks of rows whose ids each run on, but not from one block to the next, make an "
        "index taken as consecutive at open: ids map to the wrong rows",
        (("h5store/_index.py", " and block_first == first + (at - start)", ""),),
        ("test_ids.py::test_an_index_loaded_block_by_block_answers_as_one_built_at_once",),
    ),
    Mutant(
        "reader-ignores-fill-rows",
        "(c) a reader taking /index's columns out of its chunks misses fill rows inside a "
        "chunk: rows of a batch that never committed count",
        (("h5store/_file.py", "empty.append(first + int(holes[0]))", "pass"),),
        ("test_guards.py::test_rows_after_fill_rows_inside_an_index_chunk_never_count",),
    ),
    Mutant(
        "catalogue-from-stale-tables",
        "(a) the /stacks and /labels read before the rows stay the catalogue where rows name a "
        "stack they lack (a writer added it in between): the open refuses healthy rows",
        (("h5store/_read.py", "tables=tables if fit else None", "tables=tables"),),
        (
            "test_read_paths.py::"
            "test_rows_naming_a_class_added_after_the_first_look_at_the_tables_open",
        ),
    ),
]


def file_of(test: str) -> str:
    """The file under tests/ that a mutant's test (a file or ``file.py::test_name``) is in."""
    return test.split("::")[0]


def _copy_tree(tests_from: str | None, work: Path) -> None:
    shutil.copytree(
        ROOT / "h5store", work / "h5store", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
    if tests_from is None:
        shutil.copytree(
            ROOT / "tests",
            work / "tests",
            ignore=shutil.ignore_patterns("__pycache__", ".hypothesis", "node_modules", "dist"),
        )
    else:  # the tests of another revision, with today's code
        archive = subprocess.run(
            ["git", "archive", tests_from, "tests"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)


def _apply(mutant: Mutant, work: Path) -> dict[Path, str] | None:
    """Apply the mutant; the texts it replaced, to put back (None if it no longer matches)."""
    originals: dict[Path, str] = {}
    for path, old, new in mutant.edits:
        target = work / path
        text = originals.get(target) or target.read_text()
        originals.setdefault(target, text)
        current = target.read_text()
        if current.count(old) != 1:
            _revert(originals)
            return None
        target.write_text(current.replace(old, new))
    return originals


def _revert(originals: dict[Path, str]) -> None:
    # from memory, not from the checkout: the checkout may change while this runs
    for target, text in originals.items():
        target.write_text(text)


#: the test runs under way, stopped with their children if this script is stopped
_RUNNING: set[subprocess.Popen] = set()


def _pytest(tests: list[str], work: Path, timeout: float) -> tuple[int, str]:
    """Run ``tests`` in the copy at ``work``: pytest's exit status and output; TimeoutExpired
    (after stopping the run and everything it started) when it takes over ``timeout`` s."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    command += ["-W", "ignore::pytest.PytestUnraisableExceptionWarning", *tests]
    env = {**os.environ, "PYTHONPATH": str(work), "PYTHONDONTWRITEBYTECODE": "1"}
    # its own process group: a test's writer subprocesses are stopped with it
    process = subprocess.Popen(
        command,
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    _RUNNING.add(process)
    try:
        stdout, _ = process.communicate(timeout=timeout)
        return process.returncode, stdout
    finally:
        _RUNNING.discard(process)
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _stop_all(signum: int, _frame: object) -> None:
    """SIGTERM (CI's timeout, a developer's kill): stop the test runs, so that the temporary
    copies are removed on the way out instead of left behind with orphaned pytests."""
    for process in list(_RUNNING):
        _stop(process)
    raise SystemExit(128 + signum)


def _try(mutant: Mutant, work: Path, timeout: float) -> str:
    """Apply one mutant in the copy at ``work``, run its tests, put the code back."""
    tests = [f"tests/{t}" for t in mutant.tests if (work / "tests" / file_of(t)).exists()]
    originals = _apply(mutant, work)
    if originals is None:
        return "stale"
    try:
        if not tests:
            return "MISSED (no such tests)"
        start = time.monotonic()
        try:
            returncode, stdout = _pytest(tests, work, timeout)
            # Only failing tests catch a mutant (exit status 1). Any other status is a mutant
            # that proves nothing: the mutated package does not import (2, a collection
            # error), or a named test is gone (4) or selects nothing (5).
            if returncode not in (0, 1):
                lines = [line for line in stdout.splitlines() if line.startswith("E ")]
                lines += stdout.strip().splitlines()[-1:]
                return f"INVALID (pytest exit status {returncode})\n    {lines[0]}"
            caught = returncode == 1
            failed = [
                line.split(" - ")[0]
                for line in stdout.splitlines()
                if line.startswith(("FAILED ", "ERROR "))
            ]
        except subprocess.TimeoutExpired:
            caught, failed = True, ["timed out"]  # a hang is a failure too
        seconds = time.monotonic() - start
        names = " ".join(Path(t).name for t in tests)
        outcome = f"{'caught' if caught else 'MISSED'} ({seconds:.0f} s, {names})"
        return outcome + (f"\n    by {failed[0]}" if failed else "")
    finally:
        _revert(originals)


def run(mutants: list[Mutant], tests_from: str | None, timeout: float, jobs: int = 1):
    """Each mutant's outcome by name; ``jobs`` copies of the tree try mutants side by side."""
    outcome: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="h5store-mutants-") as tmp:
        copies: queue.SimpleQueue[Path] = queue.SimpleQueue()
        for k in range(max(1, min(jobs, len(mutants)))):
            _copy_tree(tests_from, Path(tmp) / str(k))
            copies.put(Path(tmp) / str(k))

        def one(mutant: Mutant) -> None:
            work = copies.get()
            try:
                outcome[mutant.name] = _try(mutant, work, timeout)
            finally:
                copies.put(work)
            print(f"{mutant.name:32} {outcome[mutant.name]}\n    {mutant.why}", flush=True)

        with ThreadPoolExecutor(max(1, jobs)) as pool:
            list(pool.map(one, mutants))
    return {m.name: outcome[m.name] for m in mutants}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to try (default: all)")
    parser.add_argument("--tests", metavar="REV", help="take tests/ from this git revision")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutant")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tried at the same time")
    args = parser.parse_args(argv)
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants: {', '.join(sorted(unknown))}")
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    signal.signal(signal.SIGTERM, _stop_all)
    start = time.monotonic()
    outcome = run(chosen, args.tests, args.timeout, args.jobs)
    caught = sum(v.startswith("caught") for v in outcome.values())
    stale = [name for name, v in outcome.items() if v == "stale"]
    missed = [name for name, v in outcome.items() if v.startswith("MISSED")]
    invalid = [name for name, v in outcome.items() if v.startswith("INVALID")]
    print(
        f"\n{caught} caught, {len(missed)} missed, {len(stale)} stale, {len(invalid)} invalid "
        f"of {len(outcome)} "
        f"mutants in {time.monotonic() - start:.0f} s (tests from {args.tests or 'this checkout'})"
    )
    for name in missed:
        print(f"MISSED: {name}: no test failed; add one that does", file=sys.stderr)
    for name in invalid:
        print(f"INVALID: {name}: its tests could not run (see above); fix it", file=sys.stderr)
    for name in stale:
        print(f"STALE: {name}: its text no longer matches the code; update it", file=sys.stderr)
    return 0 if caught == len(outcome) else 1


if __name__ == "__main__":
    sys.exit(main())
