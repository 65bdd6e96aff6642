"""Developer tooling: what a developer's machine, the tests and the benchmarks need, and
a production deployment does not.

* ``apache_kafka``: Apache Kafka from its Maven Central jars (tests, benchmarks, ``make run``),
  and ``kafka_acls``: the platform's principals and ACLs applied to it;
* ``embedded``: PostgreSQL and the memory-only Tansu broker (``make run``'s fallback
  without a JDK) as child processes;
* ``runner``: ``platereg run`` / ``make run``, the whole stack on one machine;
* ``simulate``: realistic registry traffic (``platereg simulate``);
* ``mailcatcher``: a local SMTP server keeping each message as a file;
* ``debian_tools``: programs from Debian packages the tests and benchmarks run.

It sits apart from the production plumbing (``platereg``) so that no service depends on
it: production code never imports this package. Only the CLI root (``wiring.cli``)
registers its commands; devtools itself is a client of the services and the shared
layers, never of ``wiring``.
"""
