package devserver

import "net/http"

// routes maps account-relative patterns to handlers. Pattern strings are
// also the route keys of [Stats.Routes].
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	h := func(p string, f handlerFunc) { handle(mux, p, f) }

	h("GET /me", (*call).hMe)

	h("POST /licenses/actions/validate-key", (*call).hValidateKey)
	h("POST /licenses/{id}/actions/validate", (*call).hValidate)
	h("GET /licenses/{id}/actions/validate", (*call).hValidate)
	h("GET /licenses", (*call).hLicenses)
	h("POST /licenses", (*call).hCreateLicense)
	h("GET /licenses/{id}", (*call).hLicense)
	h("PATCH /licenses/{id}", (*call).hUpdateLicense)
	h("DELETE /licenses/{id}", (*call).hDeleteLicense)
	h("POST /licenses/{id}/actions/suspend", func(c *call) (*reply, error) { return c.hSuspend(true) })
	h("POST /licenses/{id}/actions/reinstate", func(c *call) (*reply, error) { return c.hSuspend(false) })
	h("POST /licenses/{id}/actions/check-in", (*call).hCheckIn)
	h("POST /licenses/{id}/actions/increment-usage", (*call).hIncrementUsage)
	h("POST /licenses/{id}/actions/decrement-usage", (*call).hDecrementUsage)
	h("POST /licenses/{id}/actions/check-out", (*call).hLicenseCheckout)
	h("GET /licenses/{id}/actions/check-out", (*call).hLicenseCheckout)
	h("GET /licenses/{id}/entitlements", (*call).hLicenseEntitlements)
	h("POST /licenses/{id}/entitlements", (*call).hAttachEntitlements)
	h("GET /licenses/{id}/policy", (*call).hLicensePolicy)
	h("GET /licenses/{id}/product", (*call).hLicenseProduct)
	h("GET /licenses/{id}/machines", (*call).hLicenseMachines)
	h("POST /licenses/{id}/tokens", func(c *call) (*reply, error) { return c.hCreateToken("license") })

	h("POST /machines", (*call).hActivate)
	h("GET /machines", (*call).hMachines)
	h("GET /machines/{id}", (*call).hMachine)
	h("PATCH /machines/{id}", (*call).hUpdateMachine)
	h("DELETE /machines/{id}", (*call).hDeactivate)
	h("POST /machines/{id}/actions/ping", (*call).hMachinePing)
	h("POST /machines/{id}/actions/ping-heartbeat", (*call).hMachinePing)
	h("POST /machines/{id}/actions/reset", (*call).hMachineReset)
	h("POST /machines/{id}/actions/reset-heartbeat", (*call).hMachineReset)
	h("POST /machines/{id}/actions/check-out", (*call).hMachineCheckout)
	h("GET /machines/{id}/actions/check-out", (*call).hMachineCheckout)
	h("GET /machines/{id}/components", (*call).hMachineComponents)
	h("GET /machines/{id}/processes", (*call).hMachineProcesses)

	h("POST /components", (*call).hAddComponent)
	h("GET /components", (*call).hComponents)
	h("GET /components/{id}", (*call).hComponent)
	h("PATCH /components/{id}", (*call).hUpdateComponent)
	h("DELETE /components/{id}", (*call).hDeleteComponent)

	h("POST /processes", (*call).hSpawn)
	h("GET /processes", (*call).hProcesses)
	h("GET /processes/{id}", (*call).hProcess)
	h("POST /processes/{id}/actions/ping", (*call).hProcessPing)
	h("DELETE /processes/{id}", (*call).hKill)

	h("POST /products", (*call).hCreateProduct)
	h("GET /products", (*call).hProducts)
	h("GET /products/{id}", (*call).hProduct)
	h("POST /products/{id}/tokens", func(c *call) (*reply, error) { return c.hCreateToken("product") })
	h("POST /policies", (*call).hCreatePolicy)
	h("GET /policies", (*call).hPolicies)
	h("GET /policies/{id}", (*call).hPolicy)
	h("POST /entitlements", (*call).hCreateEntitlement)
	h("GET /entitlements", (*call).hEntitlements)
	h("POST /users", (*call).hCreateUser)
	return mux
}
