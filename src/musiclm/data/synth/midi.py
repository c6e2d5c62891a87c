"""Standard MIDI file writing (via mido): a composed piece as format-1 SMF bytes that FluidSynth can render."""

from __future__ import annotations

import io

import mido

TPQ = 480  # MIDI ticks per quarter note
METERS = {"3/4": (3, TPQ, 4), "4/4": (4, TPQ, 4), "6/8": (2, 3 * TPQ // 2, 8)}  # beats/bar, ticks/beat, denominator
# Tonic spellings whose key signature has at most 6 sharps or 5 flats (C# major is written Db, Eb minor D# minor).
MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "Bb", "B")


def key_name(root: int, mode: str) -> str:
    """mido's key name ("Eb", "F#m") for a root pitch class and mode."""
    return MAJOR_NAMES[root] if mode == "major" else MINOR_NAMES[root] + "m"


def _track(events: list[tuple[int, int, mido.Message | mido.MetaMessage]]) -> mido.MidiTrack:
    """A track from (tick, order, message) events; the stable sort on (tick, order) puts note-offs before
    note-ons at the same tick and otherwise keeps insertion order, so the event stream is fully determined."""
    track, now = mido.MidiTrack(), 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        msg.time, now = tick - now, tick  # each message is fresh from write_midi: set its delta time in place
        track.append(msg)
    return track  # mido appends the End of Track event on save


def write_midi(tracks: list[dict], quarter_bpm: float, meter: str, root: int, mode: str) -> bytes:
    """Format-1 SMF: a conductor track (tempo, meter, key) then one track per part.

    A part is {"name", "channel", "program" (None for drums), "volume", "notes": [(start, end, pitch, velocity)]}.
    """
    beats, _, denom = METERS[meter]
    compound = denom == 8
    conductor = [
        mido.MetaMessage("track_name", name="conductor"),
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(quarter_bpm)),
        mido.MetaMessage(
            "time_signature",
            numerator=beats * (3 if compound else 1),
            denominator=denom,
            clocks_per_click=36 if compound else 24,
            notated_32nd_notes_per_beat=8,
        ),
        mido.MetaMessage("key_signature", key=key_name(root, mode)),
    ]
    smf = mido.MidiFile(type=1, ticks_per_beat=TPQ)
    smf.tracks.append(_track([(0, 0, m) for m in conductor]))
    for t in tracks:
        ch = t["channel"]
        ev = [
            (0, 0, mido.MetaMessage("track_name", name=t["name"])),
            (0, 1, mido.Message("control_change", channel=ch, control=7, value=t["volume"])),  # channel volume
            (0, 1, mido.Message("control_change", channel=ch, control=91, value=40)),  # reverb send
        ]
        if t["program"] is not None:
            ev.append((0, 2, mido.Message("program_change", channel=ch, program=t["program"])))
        for start, end, pitch, vel in t["notes"]:
            ev.append((start, 4, mido.Message("note_on", channel=ch, note=pitch, velocity=vel)))
            ev.append((end, 3, mido.Message("note_off", channel=ch, note=pitch, velocity=0)))
        smf.tracks.append(_track(ev))
    buf = io.BytesIO()
    smf.save(file=buf)
    return buf.getvalue()
