# A module from its own repository, so the scenario proves r10k installed it.
class cluster_proof (Integer $revision) {
  file { '/var/tmp/puppet-cluster-proof':
    ensure  => file,
    content => "code revision ${revision}\n",
  }
}
