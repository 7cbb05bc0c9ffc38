# Control repository served by the lab's git server (combination 3 scenario): the
# play checks it out on every master and installs its Puppetfile with r10k. Verify
# changes the revision below, pushes, re-runs the play and expects it from every master.
node default {
  $compiled_on = strip(generate('/bin/cat', '/etc/hostname'))
  notify { 'puppet-cluster-proof':
    message => "compiled by ${server_facts['servername']} on ${compiled_on}",
  }
  class { 'cluster_proof':
    revision => 1,
  }
}
