#!/bin/sh
# Run inside a master by bench/load/blocks.py (block `jvm-experiments`), copied there first:
#   sh jvm_experiment.sh apply SAVE NAME   save the files below into SAVE, then change one setting
#   sh jvm_experiment.sh restore SAVE      the saved files back in place, SAVE removed
# One setting at a time against the collection's settings; puppetserver is restarted by the
# caller. Prints the setting as it is now in force (the line of the file it changed).
set -eu
action=$1
save=$2
conf=/etc/puppet/puppetserver/conf.d/puppetserver.conf
defaults=/etc/default/puppetserver

# A key of puppetserver.conf's jruby-puppet section: any line of it commented out, then set
# as the section's first line (HOCON: the last one of a key wins, so none may follow).
jruby_setting() {
    sed -i -E "s/^(\s*)($1):/\1# \2:/" "$conf"
    sed -i -E "s/^(\s*jruby-puppet:\s*\{)/\1\n    $1: $2/" "$conf"
    grep -E "^\s*$1:" "$conf"
}

# One more JVM option at the end of JAVA_ARGS.
java_arg() {
    sed -i -E "s/^JAVA_ARGS=\"(.*)\"/JAVA_ARGS=\"\1 $1\"/" "$defaults"
    grep -E '^JAVA_ARGS' "$defaults"
}

case $action in
    apply)
        name=$3
        mkdir -p "$save"
        cp -a "$conf" "$defaults" "$save"/
        case $name in
            baseline) grep -E '^JAVA_ARGS' "$defaults" ;;
            compile-off) jruby_setting compile-mode off ;;
            compile-jit) jruby_setting compile-mode jit ;;
            compile-force) jruby_setting compile-mode force ;;
            class-cache) jruby_setting environment-class-cache-enabled true ;;
            one-jruby) jruby_setting max-active-instances 1 ;;
            indy) java_arg -Djruby.compile.invokedynamic=true ;;
            parallel-gc) java_arg -XX:+UseParallelGC ;;
            heap-1g) sed -i -E 's/-Xm([sx])[0-9]+[mgMG]/-Xm\11g/g' "$defaults" && grep -E '^JAVA_ARGS' "$defaults" ;;
            profiler)
                sed -i -E 's/^(\s*profiler:\s*\{)/\1\n    enabled: true/' "$conf"
                grep -A1 -E '^\s*profiler:' "$conf" | tr -s ' \n' ' '
                ;;
            *) echo "unknown experiment $name" >&2; exit 2 ;;
        esac
        ;;
    restore)
        cp -a "$save/puppetserver.conf" "$conf"
        cp -a "$save/puppetserver" "$defaults"
        rm -rf "$save"
        ;;
    *)
        echo "usage: sh jvm_experiment.sh apply SAVE NAME | restore SAVE" >&2
        exit 2
        ;;
esac
