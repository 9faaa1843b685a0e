-- Argo CD health check for posthorn.dev/MailServer (argocd-cm key
-- resource.customizations.health.posthorn.dev_MailServer). Lua 5.1 as Argo CD's
-- gopher-lua runs it; tests/install.rs runs it with Debian's lua5.4 on real objects.
--   status older than the spec (observedGeneration) -> Progressing
--   Stalled=True (a spec the operator cannot run)   -> Degraded
--   Ready=True                                      -> Healthy
--   Degraded=True (e.g. a missing Secret)           -> Degraded
--   otherwise                                       -> Progressing, with Ready's message
local hs = { status = "Progressing", message = "Waiting for the operator" }
local status = obj.status
if status == nil or status.observedGeneration == nil or
    status.observedGeneration < (obj.metadata.generation or 0) then
  return hs
end
local conditions = {}
for _, c in ipairs(status.conditions or {}) do
  conditions[c.type] = c
end
local function says(kind, message)
  hs.status = kind
  hs.message = message or ""
  return hs
end
local stalled = conditions["Stalled"]
if stalled ~= nil and stalled.status == "True" then
  return says("Degraded", stalled.message)
end
local ready = conditions["Ready"]
if ready ~= nil and ready.status == "True" then
  return says("Healthy", ready.message)
end
local degraded = conditions["Degraded"]
if degraded ~= nil and degraded.status == "True" then
  return says("Degraded", degraded.message)
end
if ready ~= nil then
  return says("Progressing", ready.message)
end
return hs
