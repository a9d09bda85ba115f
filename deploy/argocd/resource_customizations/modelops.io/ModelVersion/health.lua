-- Argo CD health of a modelops.io ModelVersion, from the Ready condition the operator writes
-- (modelversions.py): Healthy once validated (Available or Serving), Degraded when refused
-- (InvalidSpec, or DuplicateVersion: another ModelVersion holds this model's version). See
-- deploy/argocd/README.md. Uses only Lua's base and table libraries.
local hs = {}

local ready = nil
if obj.status ~= nil and type(obj.status.conditions) == "table" then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then
      ready = c
    end
  end
end

local generation = obj.metadata.generation
local observed = obj.status ~= nil and obj.status.observedGeneration or nil
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to validate this version"
elseif generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to validate generation " .. generation
elseif ready.status == "True" then
  hs.status = "Healthy"
  local users = {}
  if type(obj.status.servedBy) == "table" then
    for _, s in ipairs(obj.status.servedBy) do
      table.insert(users, s.deployment .. " (" .. s.role .. ")")
    end
  end
  if #users > 0 then
    hs.message = "Serving: " .. table.concat(users, ", ")
  else
    hs.message = "Available: " .. (ready.message or "")
  end
elseif ready.status == "False" then
  hs.status = "Degraded"
  hs.message = ready.reason .. ": " .. (ready.message or "")
else
  hs.status = "Progressing"
  hs.message = ready.reason .. ": " .. (ready.message or "")
end
return hs
