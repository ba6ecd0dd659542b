"""The GraphQL clients' process (see `clients.spawn`)."""

import json
import sys

from instock.bench.graphql.clients import main

main(json.loads(sys.argv[1]))
