"""The hottest methods of a Java Flight Recorder recording of puppetserver, from the JDK's
`jfr print --json --events jdk.ExecutionSample` (read on standard input).

    jfr print --json --events jdk.ExecutionSample --stack-depth 64 rec.jfr | python3 bench/jfr_top.py [N]

Prints the N methods most often on top of a sampled stack ("self": where the CPU is spent)
and the N most often anywhere on it ("total"), as shares of all samples, then the same
"total" for the Ruby methods JRuby compiled (Puppet's own code, by file and method). JRuby's compiled
Ruby methods show under JRuby's generated class names, which carry the Ruby file
(for example .../puppet/pops/parser/lexer2.rb); interpreted Ruby shows as JRuby's
interpreter frames, so this says Java-level where, and the Ruby file when JRuby compiled it.
"""

import collections
import json
import sys


def frame_name(frame):
    method = frame.get("method", {})
    owner = method.get("type", {}).get("name", "?")
    return f"{owner}.{method.get('name', '?')}"


# How JRuby names a Ruby method it compiled: <file without .rb>.RUBY$method$<name>$<n>.
RUBY_METHOD = "RUBY$method$"


def ruby_name(name):
    """"puppet/pops/parser/lexer2.rb: scan" for a JRuby-compiled Ruby method, else None."""
    owner, method = name.rsplit(".", 1) if "." in name else ("", name)
    if not method.startswith(RUBY_METHOD):
        return None
    path = owner.split("vendor_ruby/", 1)[-1]
    return f"{path}.rb: {method[len(RUBY_METHOD):].rsplit('$', 1)[0]}"


def top_methods(recording, count):
    """(samples, [(name, self share)], [(name, total share)], [(Ruby method, total share)])
    of a parsed `jfr print --json`."""
    events = recording.get("recording", {}).get("events", [])
    own, total, ruby = collections.Counter(), collections.Counter(), collections.Counter()
    for event in events:
        frames = [frame_name(f) for f in event.get("values", {}).get("stackTrace", {}).get("frames", [])]
        if not frames:
            continue
        own[frames[0]] += 1
        for name in set(frames):
            total[name] += 1
        for name in {ruby_name(f) for f in frames} - {None}:
            ruby[name] += 1
    samples = max(1, len(events))
    return (len(events), *([(n, c / samples) for n, c in counter.most_common(count)] for counter in (own, total, ruby)))


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    samples, own, total, ruby = top_methods(json.load(sys.stdin), count)
    print(f"{samples} execution samples")
    for title, rows in (("self", own), ("total (anywhere on the stack)", total),
                        ("Ruby (JRuby-compiled), total", ruby)):
        print(f"\n| method, {title} | share of samples |\n|---|---|")
        for name, share in rows:
            print(f"| `{name}` | {share:.1%} |")


if __name__ == "__main__":
    main()
