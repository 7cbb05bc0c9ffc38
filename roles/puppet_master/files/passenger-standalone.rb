# Managed by Ansible (marionette.puppet_cluster).
# The `passenger` command of Passenger Standalone, run with ruby by the puppet-passenger
# unit: Debian's passenger package ships the Standalone code but not this entry point
# (bin/passenger).
require "phusion_passenger"
PhusionPassenger.locate_directories
PhusionPassenger.require_passenger_lib "standalone/main"
PhusionPassenger::Standalone.run!(ARGV)
