package pandadocauth

// What the fleet simulation found, and the seeds that found it.
//
// A finding matches the oracle's violations it explains. While it is
// open, TestSim skips a schedule whose every violation an open finding
// explains (it names them), and TestSimRegressions skips the finding's
// seeds; any other violation fails. When the engine is fixed, close the
// finding (open: false): its seeds then run as regression cases, and
// every schedule it used to explain must pass.
//
// A seed replays exactly only against the engine it was found on: once
// the engine changes, its choices meet other calls and the schedule goes
// elsewhere. The seeds stay as cases all the same, and a finding's
// pattern keeps being searched for by every schedule.

import (
	"regexp"
	"sort"
	"strings"
)

// simFinding is a defect the simulation found.
type simFinding struct {
	id    string
	title string
	open  bool
	match *regexp.Regexp // the violations it explains
	seeds []uint64       // schedules whose violations it alone explains
}

var simFindings = []simFinding{
	{
		id:    "F1",
		title: "a failed Store.Load under the lock is ignored and the refresh goes ahead with the cached token (defect 1)",
		match: regexp.MustCompile(`POSTs for \S+ after the Store reported its lock lost$|(while the Store holds|which it saw replaced by) rt\d+.*; its last Load failed`),
		seeds: []uint64{566, 740, 1374, 1558},
	},
	{
		id:    "F2",
		title: "a token whose Save failed is held in memory only: the lock is released, the Save is retried only on a later request, and other replicas present the refresh token it replaced (defects 2 and 5)",
		match: regexp.MustCompile(`replaced by rt\d+ that \S+ got in a ok answer at step \d+ and the Store does not hold|after Wait, the Store holds rt\d+ of \S+, not the newest rt\d+ that \S+ got in a ok answer|after Wait, \S+ still serves a token whose Save failed`),
		seeds: []uint64{1936, 2618},
	},
	{
		id:    "F3",
		title: "after a refusal, a refresh token already replaced is presented: the spare of an adopted token (defect 3); still the Initial fallback after invalid_grant when the stored token was a refresh token kept from a refused answer (no Expiry, so it passes for an older grant's leftover), and a fallback kept across later adoptions",
		open:  false,
		match: regexp.MustCompile(`which it saw replaced by rt\d+ in .*; this flight presented rt\d+ before|after the Store reported its lock lost; this flight presented rt\d+ before`),
		seeds: []uint64{1710, 342, 258, 361},
	},
	{
		id:    "F4",
		title: "a refused 200 (expires_in 2147483647, an error member, no access_token) is thrown away with the rotated refresh token inside it (defect 4)",
		match: regexp.MustCompile(`in a 200-(huge-expires-in|error-with-rt|no-access-token) answer`),
		seeds: []uint64{2710, 2375, 314},
	},
	{
		id:    "F6",
		title: "a Store that rolled back hands back a refresh token this process already spent, and it presents it again (defect 6); and when the newer token was seen only by the recheck flight of a remembered refusal, which did not remember that the Store had moved on from the refused refresh token, so that it was presented again when the Store went back to it (the part beyond a finite memory is F25)",
		open:  false,
		match: regexp.MustCompile(`which it saw replaced by rt\d+ in .*; the Store rolled back`),
		seeds: []uint64{2482, 97, 374, 19566},
	},
	{
		id:    "F7",
		title: "a process whose new token was not saved takes the older token still in the Store for another process's, and presents the refresh token it spent itself",
		match: regexp.MustCompile(`which it saw replaced by rt\d+ in a ok answer at step \d+$`),
		seeds: []uint64{3832},
	},
	{
		id:    "F8",
		title: "when the Store holds a token this process saw rotated away (a rollback), the step saves the current token again, and if that Save is refused for a lost lock, which releases the lock, it goes on to refresh holding no lock",
		match: regexp.MustCompile(`POSTs for \S+ without holding its lock`),
		seeds: []uint64{726, 758},
	},
	{
		id:    "F9",
		title: "after a rollback, the older stored token is taken for news: a process whose newer token's every Save was fenced (refused for a lost lock) dropped it for the token the Store went back to, and a refresh token refused since was saved back over the newer token as a repair, or presented again, once the Store held the newer one again (the part no process can tell apart is F24)",
		open:  false,
		match: regexp.MustCompile(`overwrote rt\d+/at-?\d+ of \S+ in the Store with the older rt\d+/at-?\d+; the Store rolled back|(not the newest|replaced by) rt\d+ that \S+ got in .*; the Store rolled back|its own refresh that the Store never held.*; the Store rolled back`),
		seeds: []uint64{159, 5845, 5197, 5180, 9338, 1147, 12812, 10090, 16743, 8508},
	},
	{
		id:    "F10",
		title: "the Save-retry timer never ends: a retry flight that fails before saving (it refreshes with the stored token instead) is retried every few seconds for good, each time presenting a refused refresh token",
		match: regexp.MustCompile(`no progress after \d+ steps of draining: \S+ started \d+ flights while draining`),
		seeds: []uint64{9, 695},
	},
	{
		id:    "F12",
		title: "Refresh returns a token whose Save failed, with a nil error (defect 12)",
		match: regexp.MustCompile(`Refresh returned at\d+ of \S+ without error, and it was never saved`),
		seeds: []uint64{802, 1583},
	},
	{
		id:    "F21",
		title: "a Refresh whose flight failed leaves its want behind: a later flight (a first load for another caller) refreshes a token that is not due",
		match: regexp.MustCompile(`before the token of rt\d+ is due, and no caller asked for it`),
		seeds: []uint64{445, 733, 337},
	},
	{
		id:    "F22",
		title: "after a Load showed another process's newer token, an older refresh token is presented: the Initial fallback told a stored token from a successor by expiry alone, so a successor stored by a process whose clock is behind (or one that lives shorter) passed for an older grant's leftover, and after invalid_grant Initial's rotated-away refresh token was presented; now only a token issued over 5 minutes before Initial counts as a leftover (a skew beyond that is not told apart)",
		open:  false,
		match: regexp.MustCompile(`presents rt\d+ of \S+, which it saw replaced by rt\d+ in a Load at step \d+; this flight presented rt\d+ before`),
		seeds: []uint64{3002261},
	},
	{
		id:    "F23",
		title: "a refresh token kept from a refused 200 is still unsaved after Wait: it was kept alone (the access token had expired), so a Save retry whose Save failed went on to refresh a token no caller asked for, and the refresh, hanging, used up Wait's 30 seconds",
		open:  false,
		match: regexp.MustCompile(`after Wait, the Store holds rt\d+ of \S+, not the newest rt\d+ that \S+ got in a 200-error-with-rt answer|after Wait, \S+ still serves a token whose Save failed`),
		seeds: []uint64{3003551},
	},
	{
		id:    "F24",
		title: "a Store that goes back to a token this process never saw is taken for another process's newer write: nothing in the tokens tells the two apart without trusting clocks across processes, which the engine does not. So the refresh token it replaced is taken for spent, and until the rolled-back one is refused, the newer token saved back is taken for a rollback and overwritten with the older one; and an unsaved newest token whose Save failed without saying it was not applied (a Save that may have been written, unlike a fenced one) is given up for it",
		open:  true,
		match: regexp.MustCompile(`overwrote rt\d+/at-?\d+ of \S+ in the Store with the older rt\d+/at-?\d+; the Store rolled back|(not the newest|replaced by) rt\d+ that \S+ got in .*; the Store rolled back|its own refresh that the Store never held.*; the Store rolled back`),
		seeds: []uint64{18712, 1343, 9138, 15456},
	},
	{
		id:    "F25",
		title: "a Store that goes back further than the 4 spent refresh tokens a source remembers (any finite memory is outrun by a rollback deep enough; refused refresh tokens take slots too) hands back one it saw replaced, and it is presented again; so does one whose successor F24's misreading marked spent",
		open:  true,
		match: regexp.MustCompile(`which it saw replaced by rt\d+ in .*; the Store rolled back`),
		seeds: []uint64{11966, 4070, 18532},
	},
}

// explain returns the ids of the open findings that explain the
// violations, and whether they explain them all.
func explain(violations []string) ([]string, bool) {
	ids := map[string]bool{}
	all := true
	for _, v := range violations {
		found := false
		for _, f := range simFindings {
			if f.open && f.match.MatchString(v) {
				ids[f.id] = true
				found = true
			}
		}
		all = all && found
	}
	var out []string
	for id := range ids {
		out = append(out, id)
	}
	sort.Strings(out)
	return out, all && len(violations) > 0
}

// findingTitles names findings for a skip message.
func findingTitles(ids []string) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteString("; ")
		}
		for _, f := range simFindings {
			if f.id == id {
				b.WriteString(f.id + ": " + f.title)
			}
		}
	}
	return b.String()
}
