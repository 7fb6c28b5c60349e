"""Development tools, not part of the service: the embedded tansu broker, Apache Kafka run
from Maven Central jars, and the end-to-end demo. ``python -m devtools --help`` lists them.

They are left out of the installed package and the image; the service never imports them.
"""
