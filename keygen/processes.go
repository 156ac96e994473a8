package keygen

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// LicenseProcesses lists the license's processes on every machine (GET
// /processes?license=ID; Keygen scopes the list to the bearer, so a license
// sees only its own). The agent counts them for PER_LICENSE and PER_USER
// process leasing (machine_process.rb counts license.processes).
func (c *Client) LicenseProcesses(ctx context.Context, licenseID string) ([]Process, error) {
	var out []Process
	for page := 1; page <= maxPages; page++ {
		q := url.Values{"license": {licenseID}, "page[size]": {strconv.Itoa(pageSize)}, "page[number]": {strconv.Itoa(page)}}
		d, err := c.doc(ctx, request{method: http.MethodGet, path: "/processes", query: q})
		if err != nil {
			return nil, err
		}
		rs, err := d.many("processes")
		if err != nil {
			return nil, err
		}
		for i := range rs {
			p, err := toProcess(&rs[i])
			if err != nil {
				return nil, err
			}
			out = append(out, *p)
		}
		if len(rs) == 0 || !d.hasNext() {
			break
		}
	}
	return out, nil
}
