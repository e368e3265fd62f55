package webhook

// acted lists, per event, the actions Parse can turn into a task; any
// other event or action is ignored whatever its payload. Missed-delivery
// recovery (package redeliver) asks for redeliveries of these only. Keep it
// in step with parse: TestHandlesMatchesParse checks every other action is
// ignored.
var acted = map[string][]string{
	"issues":                      {"labeled", "unlabeled", "assigned", "unassigned"},
	"issue_comment":               {"created"},
	"check_run":                   {"requested_action", "rerequested"},
	"pull_request_review_comment": {"created"},
	"pull_request_review":         {"submitted"},
}

// Handles reports whether a delivery of event with action may be acted on
// (whether it then is depends on its payload).
func Handles(event, action string) bool {
	for _, a := range acted[event] {
		if a == action {
			return true
		}
	}
	return false
}
