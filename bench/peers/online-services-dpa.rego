# The default purposegate policy (engine/policies/online-services-dpa.yaml)
# written in Rego, for the side-by-side benchmark.
#
# input:
#   purpose: string                         dotted purpose id
#   categories: [string]                    own category and every origin
#   tenant, owner_tenant: string            (optional)
#   deidentification: number 1..5           (optional; identified=1 .. aggregated=5)
#   group_size: number                      (optional)
#   customer_instruction: bool              (optional)
# data:
#   purposes: {id: true}                    the declared purpose tree
#
# `allow` is purposegate's PERMIT; anything else blocks. purposegate permits
# derived data only if every category in play is permitted by some rule:
# the allow rules are grouped by purpose so each lists every category some
# rule permits for it.
package purposegate

import rego.v1

default allow := false

# The purpose is declared and is `root` or below it.
within(root) if {
	data.purposes[input.purpose]
	input.purpose == root
}

within(root) if {
	data.purposes[input.purpose]
	startswith(input.purpose, concat("", [root, "."]))
}

all_in(allowed) if {
	every c in input.categories {
		c in allowed
	}
}

online := {"customer-data", "diagnostic-data", "service-generated-data"}

everything := {"customer-data", "diagnostic-data", "service-generated-data", "professional-services-data"}

permitted if {
	some root in ["troubleshoot", "improve"]
	within(root)
	all_in(everything)
}

permitted if {
	within("provide")
	all_in(online)
}

permitted if {
	within("professional-services")
	all_in({"professional-services-data"})
}

permitted if {
	within("lbo")
	all_in(everything)
	input.deidentification == 5
	input.group_size >= 50
}

permitted if {
	within("lbo")
	input.deidentification >= 4
	all_in({"diagnostic-data"})
}

# no-cross-customer-delivery; an unknown tenant on either side blocks too.
denied if {
	within("professional-services")
	"professional-services-data" in input.categories
	not same_tenant
}

same_tenant if {
	input.tenant
	input.owner_tenant
	input.tenant == input.owner_tenant
}

# no-prohibited-uses, unless a documented customer instruction says so.
denied if {
	some p in ["profiling", "advertising", "market-research"]
	within(p)
	not input.customer_instruction
}

allow if {
	permitted
	not denied
}
