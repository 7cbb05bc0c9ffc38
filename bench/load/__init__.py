"""Load measurements and fault drills on the Molecule labs (docs/load.md).

Called by bench/run (through driver.py):
  load [--block NAME ...] [--lab combo2|combo4|combo5|legacy] [--environment production|bench]
       [--users N] [--duration S] [--warmup S] [--plot-only]
  load --block jvm-experiments [--experiment NAME ...] [--environment bench]  one JRuby or JVM
       setting at a time against the collection's settings on puppet1, CPU per agent run each
  load --block lb-engines --lab combo2|combo5  HAProxy against nginx without a fault, in the
       lab's mode (tls on combo2, tcp on combo5); converges the lab to switch engines
  drill master-down|ca-down|revoke-under-load|lb-restart [--users N] [--master puppet1|puppet2]
        (combination 4's single nginx LB)
  drill front-up-puppetserver-down|jvm-frozen|disk-full|lb-host-down --lab combo2|combo4|combo5
        [--sick-seconds S] (either LB engine; lb-host-down: the pair of combination 5)
  drill table [--lab combo2|combo5]  the latest sick-master and pair drills, nginx against haproxy

Every block that loads the lab heavily or changes its state runs as its own
`flock /tmp/lab.lock` invocation of driver.py (`_locked <block>`), restores what it
changed before it returns, and stays under six minutes. Results go to
bench/.state/results/<UTC time>-<block>/ (summary.json, Locust CSV files, per-request log).

The modules, in the order a run uses them:
  cli.py          the command line, the lock, one block or drill with its results saved
  lab.py          the Lab object (hosts and names from the scenario, docker exec, waits, the guard)
  tls.py          TLS contexts and HTTPS requests from this host to the lab
  certs.py        the load's client certificates, signed by the lab's CA
  env.py          the 30-module `bench` environment written on the masters
  locust_run.py   running Locust and summarizing its per-request log
  cpu.py          CPU seconds per agent run from the containers' cgroups, read around every run
  blocks.py       the measurement blocks of `load`
  drills.py       the fault drills of `drill` on combination 4
  lb_drills.py    the drills of a sick master and of the LB pair, under either engine
  report.py       the table printed and the plots in docs/img
  backend_probe.py, tuning_settings.sh, jvm_experiment.sh: programs copied into a master and run there
"""
